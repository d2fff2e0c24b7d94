"""Prediction cache and input keys.

A key is the exact bytes of the *validated* input tensors (after conversion to the model's
dtypes), so ``{"a": 1}`` and ``{"a": 1.0}`` share a key while any change in any feature does
not. The cache keys on ``(model_version, input bytes)``: an update never serves an answer
computed by another version, even from a call that finished after the swap.

Every operation is a single C-level ``OrderedDict`` call (atomic under the GIL), so readers
and writers on many threads need no lock; a race costs at worst one extra miss or one
entry more or less than the bound for an instant.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from edge_runtime.metrics import ShardedCounter

_monotonic = time.monotonic


def input_key(feeds: dict[str, np.ndarray]) -> bytes:
    """Canonical bytes of one validated row (numeric tensors by value, strings by text)."""
    if len(feeds) == 1:
        (arr,) = feeds.values()
        if arr.dtype.kind != "O":
            return arr.tobytes()
    parts = []
    for name in sorted(feeds):
        arr = feeds[name]
        if arr.dtype.kind == "O":
            parts.append("\x1f".join(map(str, arr.ravel().tolist())).encode())
        else:
            parts.append(arr.tobytes())
    return b"\x1e".join(parts)


def row_keys(feeds: dict[str, np.ndarray], n: int) -> list[bytes]:
    """One key per row of a batch's feeds."""
    return [input_key({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]


class LRU:
    """A bounded map with least-recently-used eviction and an optional time to live."""

    __slots__ = ("_d", "_hits", "_misses", "maxsize", "ttl_s")

    def __init__(self, maxsize: int, ttl_s: float | None = None) -> None:
        self.maxsize = max(1, int(maxsize))
        self.ttl_s = ttl_s if ttl_s and ttl_s > 0 else None
        self._d: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._hits = ShardedCounter()  # exact under many threads, no lock on the hot path
        self._misses = ShardedCounter()

    @property
    def hits(self) -> int:
        return self._hits.value

    @property
    def misses(self) -> int:
        return self._misses.value

    def get(self, key: Any) -> Any | None:
        item = self._d.get(key)
        if item is None:
            self._misses.add()
            return None
        expires, value = item
        if expires and expires < _monotonic():
            self._d.pop(key, None)
            self._misses.add()
            return None
        try:
            self._d.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile; the value is still good
            pass
        self._hits.add()
        return value

    def put(self, key: Any, value: Any) -> None:
        d = self._d
        d[key] = (_monotonic() + self.ttl_s if self.ttl_s else 0.0, value)
        if len(d) > self.maxsize:
            try:
                d.popitem(last=False)
            except KeyError:
                pass

    def peek(self, key: Any) -> Any | None:
        """The value without touching recency or hit counts (expired entries count as absent)."""
        item = self._d.get(key)
        if item is None or (item[0] and item[0] < _monotonic()):
            return None
        return item[1]

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)

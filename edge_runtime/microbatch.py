"""Micro-batching: gather concurrent single-row ``predict`` calls into one backend call.

Off by default (``microbatch_max_size = 0``). When on, ``predict`` hands its validated row to
one batching thread and waits; the thread takes the first waiting row, collects more for up
to ``microbatch_max_wait_ms`` or until ``microbatch_max_size`` rows, runs them as one batch,
and hands each caller its row of the result. It only pays when the backend's per-call cost
dominates and several callers are concurrent; see the README's numbers for when it helps.
With ``timeout_ms`` set the caller stops waiting at its deadline (reason ``timeout``); a full
queue (4 × max size waiting) answers ``overloaded`` at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from edge_runtime.deadline import DeadlineExceeded, Overloaded


class _Slot:
    __slots__ = ("done", "error", "feeds", "model", "outs")

    def __init__(self, model: Any, feeds: dict[str, np.ndarray]) -> None:
        self.model = model
        self.feeds = feeds
        self.done = threading.Event()
        self.outs: list[np.ndarray] | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    def __init__(self, max_size: int, max_wait_ms: float, timeout_s: float | None = None) -> None:
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.timeout_s = timeout_s
        self.max_queue = 4 * self.max_size
        self._q: deque[_Slot] = deque()
        self._cv = threading.Condition(threading.Lock())
        self._closed = False
        self.batches = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._loop, name="edge-microbatch", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for one row (each with a leading dimension of 1)."""
        slot = _Slot(model, feeds)
        with self._cv:
            if len(self._q) >= self.max_queue or self._closed:
                raise Overloaded
            self._q.append(slot)
            self._cv.notify()
        if not slot.done.wait(self.timeout_s):
            raise DeadlineExceeded
        if slot.error is not None:
            raise slot.error
        assert slot.outs is not None
        return slot.outs

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closed:
                    self._cv.wait()
                if self._closed:
                    for s in self._q:
                        s.error = Overloaded()
                        s.done.set()
                    return
                batch = [self._q.popleft()]
                model = batch[0].model
                deadline = time.monotonic() + self.max_wait_s
                while len(batch) < self.max_size:
                    if self._q:
                        if self._q[0].model is not model:  # a swap happened: next batch
                            break
                        batch.append(self._q.popleft())
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            self._run(model, batch)

    def _run(self, model: Any, batch: list[_Slot]) -> None:
        self.batches += 1
        self.rows += len(batch)
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {k: np.concatenate([s.feeds[k] for s in batch]) for k in batch[0].feeds}
            outs = model.backend.run(feeds)  # each caller checks its own slice
        except BaseException as exc:  # the callers classify it
            for s in batch:
                s.error = exc
                s.done.set()
            return
        for i, s in enumerate(batch):
            s.outs = [o[i:i + 1] for o in outs]
            s.done.set()

    def snapshot(self) -> dict[str, Any]:
        return {"max_size": self.max_size, "max_wait_ms": self.max_wait_s * 1000, "batches": self.batches,
                "rows": self.rows, "mean_batch": round(self.rows / self.batches, 3) if self.batches else None,
                "queued": len(self._q)}

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

"""Sampled prediction log: JSON lines on disk, bounded in size, written off the predict path.

The predict path only decides whether to sample (a shared counter: every ``round(1/rate)``-th
call, no random number per call) and appends a small tuple to a bounded in-memory queue; the
Runtime's background thread formats and writes. When the writer falls behind, new records are
dropped and counted (``dropped``) — a prediction never waits for the disk and never fails
because of it. The active file rotates to ``.1`` … ``.N`` so the files together stay within
``log_max_mb``.

Each line: ``{"time", "model", "model_version", "source", "reason", "latency_ms",
"features": {name: value}, "output", "probabilities"}``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class PredictionLog:
    def __init__(self, path: str | Path, *, sample_rate: float, max_mb: float = 16.0, backups: int = 3,
                 max_pending: int = 10000) -> None:
        self.path = Path(path)
        self.every = max(1, round(1.0 / sample_rate)) if sample_rate > 0 else 0
        self.backups = max(0, backups)
        self.file_cap = max(4096, int(max_mb * 1024 * 1024 / (self.backups + 1)))
        self.max_pending = max_pending
        self.pending: deque[tuple[Any, ...]] = deque()
        self.dropped = 0
        self.written = 0
        self.errors = 0
        self._calls = itertools.count()
        self._size = -1
        self._last_error_log = 0.0
        self._flush_lock = threading.Lock()  # the background thread and flush() may both write

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def sample(self) -> bool:
        return next(self._calls) % self.every == 0

    def offer(self, record: tuple[Any, ...]) -> bool:
        """Queue one record; False (and counted) when the queue is full."""
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return False
        self.pending.append(record)
        return True

    # -- background thread -----------------------------------------------------------------------
    def flush(self, feature_names: tuple[str, ...], model_name: str) -> int:
        """Write every pending record; return how many were written."""
        with self._flush_lock:
            return self._flush(feature_names, model_name)

    def _flush(self, feature_names: tuple[str, ...], model_name: str) -> int:
        lines = []
        pending = self.pending
        while pending:
            try:
                rec = pending.popleft()
            except IndexError:
                break
            lines.append(_format(rec, feature_names, model_name))
        if not lines:
            return 0
        try:
            written = self._write([(line + "\n").encode() for line in lines])
        except OSError as exc:
            self.errors += 1
            self.dropped += len(lines)
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.warning("prediction log %s: cannot write (%s); records are dropped", self.path, exc)
            return 0
        self.written += written
        self.dropped += len(lines) - written
        return written

    def _write(self, lines: list[bytes]) -> int:
        """Append whole lines, rotating before a line would take the file past its cap."""
        if self._size < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = self.path.stat().st_size if self.path.exists() else 0
        written = 0
        buf: list[bytes] = []
        size = self._size
        f = open(self.path, "ab")
        try:
            for line in lines:
                if len(line) > self.file_cap:
                    continue  # one record larger than a file: dropped, never truncated
                if size + len(line) > self.file_cap:
                    f.write(b"".join(buf))
                    f.close()
                    buf = []
                    self._rotate()
                    size = 0
                    f = open(self.path, "ab")
                buf.append(line)
                size += len(line)
                written += 1
            f.write(b"".join(buf))
        finally:
            f.close()
            self._size = size
        return written

    def _rotate(self) -> None:
        if self.backups == 0:
            os.remove(self.path)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._size = 0

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


def _format(rec: tuple[Any, ...], names: tuple[str, ...], model_name: str) -> str:
    when, version, source, reason, ms, row, value, proba = rec
    if isinstance(row, np.ndarray):
        feats: Any = dict(zip(names, row.reshape(-1).tolist(), strict=False))
    elif isinstance(row, dict):
        feats = {k: (v.reshape(-1).tolist()[0] if isinstance(v, np.ndarray) else v) for k, v in row.items()}
    else:
        feats = row
    d = {"time": round(when, 6), "model": model_name, "model_version": version, "source": source,
         "reason": reason, "latency_ms": round(ms, 4), "features": feats, "output": value}
    if proba is not None:
        d["probabilities"] = np.asarray(proba).round(6).tolist()
    return json.dumps(d, default=str)

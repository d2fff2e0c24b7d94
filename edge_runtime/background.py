"""The Runtime's one background thread: subscriber callbacks, the prediction log, drift.

Work reaches it through bounded deques; the predict path appends and (rarely) sets an
Event, and never waits. A callback that raises is logged and forgotten.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[str, dict[str, Any]], None]


class Background:
    def __init__(self, name: str = "edge-runtime-bg", max_tasks: int = 1000, period_s: float = 0.5) -> None:
        self._tasks: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self.max_tasks = max_tasks
        self.period_s = period_s
        self.periodic: list[Callable[[], Any]] = []  # run every period and after every wake-up
        self.dropped = 0
        self.subscribers: list[Callback] = []
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # held while tasks run, so drain() from another thread also waits for the task in flight
        self._run_lock = threading.RLock()
        self._name = name

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> bool:
        if len(self._tasks) >= self.max_tasks:
            self.dropped += 1
            return False
        self._tasks.append((fn, args))
        if self._thread is None:
            self.start()
        self._wake.set()
        return True

    def wake(self) -> None:
        if self._thread is None:
            self.start()
        self._wake.set()

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Deliver an event to every subscriber, from the background thread."""
        if self.subscribers:
            self.submit(self._deliver, kind, data)

    def _deliver(self, kind: str, data: dict[str, Any]) -> None:
        for cb in list(self.subscribers):
            try:
                cb(kind, data)
            except Exception:
                log.exception("event subscriber %r failed on %s", cb, kind)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.period_s)
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Run everything queued now, after any task already running (also from other threads)."""
        with self._run_lock:
            self._drain()

    def _drain(self) -> None:
        while self._tasks:
            try:
                fn, args = self._tasks.popleft()
            except IndexError:
                break
            try:
                fn(*args)
            except Exception:
                log.exception("background task %r failed", fn)
        for fn in list(self.periodic):
            try:
                fn()
            except Exception:
                log.exception("background task %r failed", fn)

    def close(self, timeout: float = 2.0) -> None:
        self._stop = True
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self.drain()

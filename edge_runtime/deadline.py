"""Run inference with a deadline on a small, bounded set of worker threads.

Only used when ``timeout_ms`` is set; without it inference runs on the caller's thread.

onnxruntime (and LiteRT) cannot interrupt a running inference. So a call that overruns
returns the fallback to its caller on time, and the inference **keeps its worker until it
finishes**; its result is then discarded (counted in ``late``). There are ``workers``
threads and never a queue: when every worker is still busy with an overrunning call, a new
call gets the fallback at once with reason ``overloaded`` instead of piling up threads or
waiting behind a stuck model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


class DeadlineExceeded(Exception):
    """The call overran its deadline (its inference goes on in the background)."""


class Overloaded(Exception):
    """Every worker is busy; the call was not started."""


class DeadlineRunner:
    def __init__(self, timeout_s: float, workers: int = 2) -> None:
        self.timeout_s = timeout_s
        self.workers = max(1, workers)
        self._free = threading.BoundedSemaphore(self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="edge-deadline")
        self.busy = 0  # workers running a call (read by snapshot; changed under _count_lock)
        self._count_lock = threading.Lock()
        self.late = 0  # runs that finished after their caller had been answered
        self.timeouts = 0
        self.overloads = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._free.acquire(blocking=False):
            with self._count_lock:
                self.overloads += 1
            raise Overloaded
        with self._count_lock:
            self.busy += 1
        try:
            fut: Future[Any] = self._pool.submit(self._call, fn, args)
        except RuntimeError:  # pool shut down by close()
            self._done()
            raise
        try:
            return fut.result(self.timeout_s)
        except FutureTimeout:
            with self._count_lock:
                self.timeouts += 1
            fut.add_done_callback(self._late)
            raise DeadlineExceeded from None

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count_lock:
            self.busy -= 1
        self._free.release()

    def _late(self, _fut: Future[Any]) -> None:
        with self._count_lock:
            self.late += 1

    def snapshot(self) -> dict[str, Any]:
        return {"timeout_ms": self.timeout_s * 1000, "workers": self.workers, "busy": self.busy,
                "timeouts": self.timeouts, "overloaded": self.overloads, "late_completions": self.late}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

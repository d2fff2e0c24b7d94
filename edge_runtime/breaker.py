"""Circuit breaker: stop calling a model that keeps failing, probe it again after a cool-down.

    closed ──(N consecutive failures, or failure rate ≥ r over the last W calls)──▶ open
    open ──(cool-down elapsed; next call is the probe)──▶ half_open
    half_open ──probe succeeds──▶ closed        half_open ──probe fails──▶ open

While open (and while a probe is in flight) calls get the fallback with reason
``breaker_open`` without touching the model. The success path in the closed state is two
attribute stores, no lock; failures and state changes take a small lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class CircuitBreaker:
    def __init__(self, failures: int = 5, failure_rate: float = 0.5, window: int = 100,
                 min_calls: int = 20, cooldown_s: float = 30.0,
                 on_change: Callable[[str, str, str], None] | None = None) -> None:
        self.failures = failures  # 0 disables the breaker
        self.failure_rate = failure_rate
        self.window = max(1, window)
        self.min_calls = max(1, min_calls)
        self.cooldown_s = cooldown_s
        self.on_change = on_change  # (old_state, new_state, why)
        self.state = CLOSED
        self.opened_at = 0.0
        self.last_reason = ""
        self.times_opened = 0
        self._lock = threading.Lock()
        self._reset_window()

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def _reset_window(self) -> None:
        self._ring = [0] * self.window
        self._calls = itertools.count()  # next() is atomic: each call gets its own slot
        self._seen = 0  # calls recorded in the window (for snapshot; may lag a racing call)
        self._consecutive = 0
        self._probing = False

    # -- per call ----------------------------------------------------------------------------
    def allow(self) -> bool:
        """May this call reach the model? Only asked when ``state`` is not closed."""
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and time.monotonic() - self.opened_at >= self.cooldown_s:
                self._set(HALF_OPEN, "cool-down elapsed; probing")
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True  # this call is the probe
                return True
            return self.state == CLOSED

    def success(self) -> None:
        if self.state != CLOSED:
            with self._lock:
                if self.state == HALF_OPEN:
                    self._reset_window()
                    self._set(CLOSED, "probe succeeded")
            return
        n = next(self._calls)
        self._ring[n % self.window] = 0
        self._seen = n + 1
        self._consecutive = 0

    def failure(self, reason: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.last_reason = reason
            if self.state == HALF_OPEN:
                self._probing = False
                self._open(f"probe failed ({reason})")
                return
            if self.state == OPEN:
                return
            n = next(self._calls)
            self._ring[n % self.window] = 1
            self._seen = n + 1
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open(f"{self._consecutive} consecutive failures (last: {reason})")
                return
            seen = min(n + 1, self.window)
            if seen >= self.min_calls:
                rate = sum(self._ring) / seen
                if rate >= self.failure_rate:
                    self._open(f"failure rate {rate:.0%} over the last {seen} calls (last: {reason})")

    # -- state -------------------------------------------------------------------------------
    def _open(self, why: str) -> None:
        self.opened_at = time.monotonic()
        self.times_opened += 1
        self._set(OPEN, why)

    def _set(self, new: str, why: str) -> None:
        old, self.state = self.state, new
        if old != new and self.on_change is not None:
            self.on_change(old, new, why)

    def reset(self) -> None:
        """Back to closed with an empty window (a new model is being served)."""
        with self._lock:
            self._reset_window()
            self._set(CLOSED, "reset")

    def snapshot(self) -> dict[str, object]:
        seen = min(self._seen, self.window)
        return {
            "state": self.state,
            "enabled": self.enabled,
            "consecutive_failures": self._consecutive,
            "failure_rate": round(sum(self._ring) / seen, 4) if seen else 0.0,
            "times_opened": self.times_opened,
            "last_failure": self.last_reason or None,
            "retry_in_s": (round(max(0.0, self.cooldown_s - (time.monotonic() - self.opened_at)), 3)
                           if self.state == OPEN else None),
        }

"""Time a backend on fixed feeds with ``perf_counter_ns`` and nothing else in the timed region."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    batch_size: int
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    inferences_per_s: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_from_ns(samples_ns: np.ndarray, batch_size: int = 1) -> LatencyStats:
    ms = samples_ns.astype(np.float64) / 1e6
    p = np.percentile(ms, [50, 90, 95, 99, 99.9])
    mean = float(ms.mean())
    return LatencyStats(
        runs=int(ms.size), batch_size=batch_size, min_ms=float(ms.min()), mean_ms=mean,
        std_ms=float(ms.std()), p50_ms=float(p[0]), p90_ms=float(p[1]), p95_ms=float(p[2]),
        p99_ms=float(p[3]), p999_ms=float(p[4]), max_ms=float(ms.max()),
        inferences_per_s=1000.0 / mean if mean > 0 else float("inf"),
        rows_per_s=1000.0 * batch_size / mean if mean > 0 else float("inf"),
    )


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 10) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times; return each call's ns."""
    for _ in range(warmup):
        fn()
    out = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def timer_overhead_ns(runs: int = 10000) -> float:
    """Median cost of the timing loop itself around an empty call, in ns."""
    return float(np.median(time_calls(lambda: None, runs, warmup=100)))

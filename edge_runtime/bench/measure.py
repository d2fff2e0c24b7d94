"""Time a backend on fixed feeds with ``perf_counter_ns`` and nothing else in the timed region.

Shared by ``edge-runtime bench`` and ``edge-convert --quantize auto`` so that the choice the
converter makes is the one bench would show. Only the call under test sits between the two
clock reads; picking the next prepared input, storing the sample, checking the deadline and
reporting progress all happen outside them. ``timer_overhead_ns`` measures what the loop
itself adds (two clock reads and a call), so reports can state it; it is not subtracted.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

# progress(done, total, unit): done/total in runs, or in seconds for a --duration run
Progress = Callable[[float, float, str], None]


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyStats:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def stats_from_ns(samples_ns: np.ndarray, batch_size: int = 1) -> LatencyStats:
    if samples_ns.size == 0:
        raise ValueError("no latency samples")
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


def time_feeds(run: Callable[[Any], Any], feeds: Sequence[Any], *, runs: int | None = None,
               duration_s: float | None = None, min_runs: int = 1, warmup: int = 0,
               progress: Progress | None = None, progress_every_s: float = 0.1) -> np.ndarray:
    """Call ``run(feeds[i % len(feeds)])`` and return each call's duration in ns.

    Stops after ``runs`` calls, or once ``duration_s`` has passed and at least ``min_runs``
    calls were made, whichever comes first (give one or both). ``warmup`` calls run first,
    untimed, cycling through the same feeds.
    """
    if runs is None and duration_s is None:
        raise ValueError("give runs, duration_s or both")
    if not feeds:
        raise ValueError("no feeds to run")
    k = len(feeds)
    for i in range(warmup):
        run(feeds[i % k])
    clock = time.perf_counter_ns
    limit = runs if runs is not None else 1 << 62
    start = clock()
    deadline = start + int(duration_s * 1e9) if duration_s is not None else 1 << 62
    every = int(progress_every_s * 1e9)
    next_report = start + every if progress is not None else 1 << 62
    out = array("q")
    append = out.append
    i = 0
    while i < limit:
        f = feeds[i % k]
        t0 = clock()
        run(f)
        t1 = clock()
        append(t1 - t0)
        i += 1
        if t1 >= deadline and i >= min_runs:
            break
        if t1 >= next_report:
            assert progress is not None
            if duration_s is not None and runs is None:
                progress((t1 - start) / 1e9, float(duration_s), "s")
            else:
                progress(float(i), float(limit), "runs")
            next_report = t1 + every
    return np.frombuffer(out, dtype=np.int64).copy()


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
    return float(np.median(time_feeds(_noop, (None,), runs=runs, warmup=100)))


def _noop(_: Any) -> None:
    return None

"""The timing loop and the statistics bench and --quantize auto share."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_runtime.bench.measure import LatencyStats, stats_from_ns, time_calls, time_feeds, timer_overhead_ns


def test_time_feeds_counts_runs_cycles_inputs_and_keeps_warmup_out() -> None:
    seen: list[int] = []
    out = time_feeds(seen.append, [0, 1, 2], runs=7, warmup=4)
    assert out.dtype == np.int64 and out.shape == (7,) and (out >= 0).all()
    warmup, timed = seen[:4], seen[4:]
    assert warmup == [0, 1, 2, 0] and timed == [0, 1, 2, 0, 1, 2, 0]  # timed runs restart at feed 0


def test_time_feeds_measures_the_call() -> None:
    out = time_feeds(lambda _: time.sleep(0.002), [None], runs=5)
    assert (out >= 2_000_000).all() and (out < 200_000_000).all()


def test_duration_stops_on_time_but_not_before_min_runs() -> None:
    t0 = time.perf_counter()
    out = time_feeds(lambda _: None, [None], duration_s=0.05)
    elapsed = time.perf_counter() - t0
    assert 0.05 <= elapsed < 2 and out.size > 100
    slow = time_feeds(lambda _: time.sleep(0.001), [None], duration_s=0.001, min_runs=5)
    assert slow.size == 5
    capped = time_feeds(lambda _: None, [None], runs=10, duration_s=60)
    assert capped.size == 10


def test_progress_is_reported_in_runs_or_seconds() -> None:
    calls: list[tuple[float, float, str]] = []
    time_feeds(lambda _: time.sleep(0.001), [None], runs=60, progress=lambda *a: calls.append(a),
               progress_every_s=0.01)
    assert calls and all(unit == "runs" and total == 60 and 0 < done <= 60 for done, total, unit in calls)
    calls.clear()
    time_feeds(lambda _: time.sleep(0.001), [None], duration_s=0.06, progress=lambda *a: calls.append(a),
               progress_every_s=0.01)
    assert calls and all(unit == "s" and total == 0.06 for _, total, unit in calls)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="runs, duration_s"):
        time_feeds(lambda _: None, [None])
    with pytest.raises(ValueError, match="no feeds"):
        time_feeds(lambda _: None, [], runs=1)


def test_stats_are_ordered_and_throughput_follows_the_mean() -> None:
    rng = np.random.default_rng(0)
    ns = rng.lognormal(11, 0.5, 5000).astype(np.int64)
    s = stats_from_ns(ns, batch_size=8)
    order = [s.min_ms, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.p999_ms, s.max_ms]
    assert order == sorted(order) and s.runs == 5000
    assert s.mean_ms == pytest.approx(ns.mean() / 1e6)
    assert s.rows_per_s == pytest.approx(8 * s.inferences_per_s) == pytest.approx(8000 / s.mean_ms)
    assert LatencyStats.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        stats_from_ns(np.array([], dtype=np.int64))


def test_time_calls_and_overhead_keep_their_contract() -> None:
    out = time_calls(lambda: None, runs=50, warmup=3)
    assert out.shape == (50,) and out.dtype == np.int64
    overhead = timer_overhead_ns(2000)
    assert 0 < overhead < 100_000  # two clock reads and a call: well under 0.1 ms anywhere

"""Counters, latency histogram and percentiles, cheap enough for every call.

``VersionMetrics`` belongs to one serving version (it lives in the object a swap replaces).
Each thread that predicts writes to its own shard (``threading.local``), so counting is exact
under concurrency without a shared lock on the predict path; readers sum the shards. Latency
percentiles come from a sliding window of the version's last ``latency_window`` calls (a
deque, whose ``append`` is atomic).

``MetricsBook`` is the Runtime's view over every version it has served: counters stay
cumulative across swaps (a retired version's totals are kept, so Prometheus counters never go
backwards), while percentiles describe the version serving now. Prometheus text is produced at
scrape time by a collector in a ``CollectorRegistry`` of the Runtime's own (never the
process-global one).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# Prometheus latency buckets (seconds): 50 µs .. 10 s
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 10.0)
_BOUNDS = np.asarray(BUCKETS)
_FOLD_EVERY = 256
RETIRED_KEPT = 8  # retired versions kept apart; older ones are folded into one total

Totals = tuple[dict[tuple[str, str, str], int], dict[str, int], list[int], float]


class ShardedCounter:
    """An exact counter for many threads without a lock: each thread adds to its own cell."""

    __slots__ = ("_cells", "_lock", "_tls")

    def __init__(self) -> None:
        self._tls = threading.local()
        self._cells: list[list[int]] = []
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        try:
            self._tls.cell[0] += n
        except AttributeError:
            cell = [n]
            with self._lock:
                self._cells.append(cell)
            self._tls.cell = cell

    @property
    def value(self) -> int:
        with self._lock:
            cells = list(self._cells)
        return sum(c[0] for c in cells)


class _Shard:
    """One thread's counts. Only its own thread writes; readers copy."""

    __slots__ = ("buckets", "counts", "fallbacks", "lat_sum", "new")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}  # (version, source, outcome) -> n
        self.fallbacks: dict[str, int] = {}  # "fallback:<reason>" -> n
        self.new: list[float] = []  # latencies (s) not yet folded into the histogram
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.lat_sum = 0.0

    def fold(self) -> None:
        """Move ``new`` into the histogram (owner thread only: no race)."""
        new, self.new = self.new, []
        idx = np.searchsorted(_BOUNDS, np.asarray(new), side="left")
        for i, c in enumerate(np.bincount(idx, minlength=len(self.buckets)).tolist()):
            self.buckets[i] += c
        self.lat_sum += float(sum(new))

    def histogram(self) -> tuple[list[int], float]:
        """Buckets and sum including the not-yet-folded latencies (read-only, any thread)."""
        new = list(self.new)
        b = list(self.buckets)
        if new:
            idx = np.searchsorted(_BOUNDS, np.asarray(new), side="left")
            for i, c in enumerate(np.bincount(idx, minlength=len(b)).tolist()):
                b[i] += c
        return b, self.lat_sum + float(sum(new))


def _empty_totals() -> Totals:
    return {}, {}, [0] * (len(BUCKETS) + 1), 0.0


def _add_totals(into: Totals, other: Totals) -> None:
    counts, fb, buckets, _ = into
    for k, v in other[0].items():
        counts[k] = counts.get(k, 0) + v
    for k2, v in other[1].items():
        fb[k2] = fb.get(k2, 0) + v
    for i, c in enumerate(other[2]):
        buckets[i] += c


class VersionMetrics:
    """Counts and latencies of one serving version."""

    def __init__(self, latency_window: int = 2048) -> None:
        self._tls = threading.local()
        self._shards: list[_Shard] = []
        self._shards_lock = threading.Lock()
        self.latencies: deque[float] = deque(maxlen=max(1, latency_window))  # seconds

    def shard(self) -> _Shard:
        try:
            return self._tls.shard  # type: ignore[no-any-return]
        except AttributeError:
            s = _Shard()
            with self._shards_lock:
                self._shards.append(s)
            self._tls.shard = s
            return s

    # -- recording (hot path) ------------------------------------------------------------------
    def record(self, key: tuple[str, str, str], seconds: float, n: int = 1) -> None:
        """Count ``n`` answers under (version, source, outcome) and one latency sample."""
        try:
            s = self._tls.shard
        except AttributeError:
            s = self.shard()
        counts = s.counts
        counts[key] = counts.get(key, 0) + n
        new = s.new
        new.append(seconds)
        if len(new) >= _FOLD_EVERY:
            s.fold()
        self.latencies.append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        """A plain counter: fallback reasons."""
        f = self.shard().fallbacks
        f[name] = f.get(name, 0) + n

    # -- reading -----------------------------------------------------------------------------
    def totals(self) -> Totals:
        """Counts, other counters, histogram buckets and latency sum over every thread."""
        out = _empty_totals()
        total = 0.0
        with self._shards_lock:
            shards = list(self._shards)
        for s in shards:
            b, t = s.histogram()
            _add_totals(out, (dict(s.counts), dict(s.fallbacks), b, t))
            total += t
        return out[0], out[1], out[2], total

    def percentiles(self) -> dict[str, Any]:
        return latency_percentiles(list(self.latencies))


def latency_percentiles(seconds: list[float]) -> dict[str, Any]:
    lat = np.asarray(seconds, dtype=float) * 1000.0
    if not lat.size:
        return {"p50": None, "p95": None, "p99": None, "window": 0}
    p = np.percentile(lat, [50, 95, 99]).round(4).tolist()
    return {"p50": p[0], "p95": p[1], "p99": p[2], "window": int(lat.size)}


class MetricsBook:
    """Every version a Runtime has served: the current one, a few retired ones, and the rest folded.

    A call that started before a swap finishes on the old version and still counts: retired
    versions stay readable until they are folded, which happens only after several more swaps.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.current: VersionMetrics | None = None
        self.side: list[VersionMetrics] = []  # versions serving beside the current one (an experiment's candidate)
        self._retired: deque[VersionMetrics] = deque()
        self._folded = _empty_totals()
        self._folded_sum = 0.0
        self._lock = threading.Lock()
        self._registry: Any = None
        self.extra_gauges: Callable[[], dict[str, Any]] | None = None  # breaker, loaded, drift...
        self.extra_counters: Callable[[], dict[str, int]] | None = None  # cache hits/misses

    def serve(self, metrics: VersionMetrics) -> None:
        """``metrics`` belongs to the version that serves from now on."""
        with self._lock:
            if self.current is not None and self.current is not metrics:
                self._retire(self.current)
            self.current = metrics

    def beside(self, metrics: VersionMetrics, on: bool) -> None:
        """A version starts (``on``) or stops serving beside the current one; its counts stay."""
        with self._lock:
            if on:
                self.side.append(metrics)
            elif metrics in self.side:
                self.side.remove(metrics)
                self._retire(metrics)

    def _retire(self, metrics: VersionMetrics) -> None:
        self._retired.append(metrics)
        while len(self._retired) > RETIRED_KEPT:
            old = self._retired.popleft().totals()
            _add_totals(self._folded, old)
            self._folded_sum += old[3]

    def totals(self) -> Totals:
        with self._lock:
            parts = [*self._retired, *self.side, *([self.current] if self.current is not None else [])]
            out: Totals = ({**self._folded[0]}, {**self._folded[1]}, list(self._folded[2]), 0.0)
            total = self._folded_sum
        for m in parts:
            t = m.totals()
            _add_totals(out, t)
            total += t[3]
        return out[0], out[1], out[2], total

    def percentiles(self) -> dict[str, Any]:
        cur = self.current
        return cur.percentiles() if cur is not None else latency_percentiles([])

    # -- Prometheus ----------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        """This Runtime's ``prometheus_client.CollectorRegistry`` (created on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            reg = CollectorRegistry(auto_describe=False)
            reg.register(_Collector(self))
            self._registry = reg
        return self._registry

    def prometheus_text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)  # type: ignore[no-any-return]


class _Collector:
    def __init__(self, metrics: MetricsBook) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.m
        name = m.model_name
        counts, other, buckets, sums = m.totals()
        req = CounterMetricFamily("model_prediction_requests", "Predictions answered, by where the answer "
                                  "came from and how the call ended", labels=["model", "version", "source",
                                                                               "outcome"])
        for (ver, source, outcome), n in sorted(counts.items()):
            req.add_metric([name, ver, source, outcome], n)
        yield req
        hist = HistogramMetricFamily("model_prediction_latency_seconds", "Time to answer one predict call",
                                     labels=["model"])
        cum, acc = [], 0
        for bound, c in zip((*map(str, BUCKETS), "+Inf"), buckets, strict=True):
            acc += c
            cum.append((bound, acc))
        hist.add_metric([name], cum, sums)
        yield hist
        fb = CounterMetricFamily("model_prediction_fallbacks", "Answers given by the fallback, by reason",
                                 labels=["model", "reason"])
        for k, n in sorted(other.items()):
            if k.startswith("fallback:"):
                fb.add_metric([name, k[9:]], n)
        yield fb
        counters = m.extra_counters() if m.extra_counters else {}
        for what in ("hits", "misses"):
            cm = CounterMetricFamily(f"model_prediction_cache_{what}", f"Prediction cache {what}",
                                     labels=["model"])
            cm.add_metric([name], counters.get(f"cache_{what}", 0))
            yield cm
        extra = m.extra_gauges() if m.extra_gauges else {}
        if "breaker_state" in extra:
            g = GaugeMetricFamily("model_circuit_breaker_state", "1 for the breaker's current state",
                                  labels=["model", "state"])
            for st in ("closed", "open", "half_open"):
                g.add_metric([name, st], 1.0 if extra["breaker_state"] == st else 0.0)
            yield g
        if "loaded" in extra:
            g = GaugeMetricFamily("model_loaded", "1 when the model is loaded and smoke-tested",
                                  labels=["model", "version"])
            g.add_metric([name, str(extra.get("version") or "")], 1.0 if extra["loaded"] else 0.0)
            yield g
        if "ready" in extra:
            g = GaugeMetricFamily("model_ready", "1 when the runtime is ready to serve from the model",
                                  labels=["model"])
            g.add_metric([name], 1.0 if extra["ready"] else 0.0)
            yield g
        if "log_dropped" in extra:
            ld = CounterMetricFamily("model_prediction_log_dropped", "Sampled prediction records dropped "
                                     "because the log writer fell behind", labels=["model"])
            ld.add_metric([name], extra["log_dropped"])
            yield ld
        drift = extra.get("drift") or {}
        if drift:
            g = GaugeMetricFamily("model_drift_score", "Drift of the recent window against the manifest's "
                                  "reference", labels=["model", "feature", "method"])
            for feature, scores in sorted(drift.items()):
                for method, v in sorted(scores.items()):
                    if v is not None:
                        g.add_metric([name, feature, method], float(v))
            yield g

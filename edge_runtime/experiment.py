"""An experiment on one device: a candidate model beside the primary, by split or in shadow.

    rt.start_experiment("artifacts/churn-v8", mode="split", weight=0.1, key="request_id")
    rt.predict(row, request_id="r-17").variant      # "candidate" for ~10% of ids, always the same
    rt.metrics()["variants"]                          # counts, error/fallback rates, p50/p95/p99 each
    rt.end_experiment()                               # the candidate is unloaded

``split``: a request goes to the candidate when a hash of its key falls under ``weight``; the key
is the ``request_id``, or the feature named by ``key``, or random when the request has neither,
so the same key always gets the same variant. ``shadow``: the primary answers every request; a
``shadow_sample`` share is also scored by the candidate on a thread of its own, off the answer
path (a bounded queue; dropped and counted when full), and the agreement of the two is reported.
Each variant is a ``ServingVersion`` with its own cache, breaker and counters.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.metrics import Totals, latency_percentiles
from edge_runtime.prediction import Prediction, PredictionBatch
from edge_runtime.serving import ServingVersion

log = logging.getLogger(__name__)

MODES = ("split", "shadow")
PRIMARY, CANDIDATE = "primary", "candidate"
SHADOW_BATCH = 16


@dataclass(frozen=True)
class ExperimentOptions:
    mode: str = "split"
    weight: float = 0.1  # share of keys sent to the candidate (split)
    key: str = "request_id"  # or a feature name
    shadow_sample: float = 0.2  # share of requests the candidate also scores (shadow)
    shadow_queue: int = 256  # waiting shadow requests; more are dropped and counted

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"experiment mode must be one of {', '.join(MODES)}, not {self.mode!r}", key="mode")
        for name in ("weight", "shadow_sample"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be a share between 0 and 1, not {v!r}", key=name)
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError("key must name request_id or a feature", key="key")
        if self.shadow_queue < 1:
            raise ConfigError("shadow_queue must be at least 1", key="shadow_queue")


def bucket(key: Any) -> float:
    """A stable number in [0, 1) for a key: the same key always falls in the same place, on every
    device and after every restart (CRC-32, then a multiplicative mix so that keys differing
    only in their last characters spread over the whole range)."""
    h = zlib.crc32(key.encode("utf-8", "surrogatepass") if type(key) is str else repr(key).encode())
    return ((h * 0x9E3779B1) & 0xFFFFFFFF) / 4294967296.0


class Experiment:
    def __init__(self, candidate: ServingVersion, primary: ServingVersion, options: ExperimentOptions) -> None:
        self.candidate = candidate
        self.options = options
        self.mode = options.mode
        self._weight = options.weight
        self._key = options.key
        self._by_request = options.key == "request_id"
        self._base = {PRIMARY: (primary.version, _summary(primary.metrics.totals()))}  # before it started
        # a deque, not a queue.Queue: appending takes no lock on the caller's path; the shadow
        # thread polls it (every 2 ms when idle)
        self._shadow_q: collections.deque[tuple[Any, Prediction]] = collections.deque()
        self._queue_max = options.shadow_queue
        self._stopped = threading.Event()
        self.sampled = 0  # written by callers only
        self.dropped = 0
        self.shadow: dict[str, float] = {"compared": 0, "failed": 0, "label_agree": 0,
                       "max_abs_diff": 0.0, "sum_abs_diff": 0.0}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if self.mode == "shadow":
            self._thread = threading.Thread(target=self._shadow_loop, name="edge-shadow", daemon=True)
            self._thread.start()

    # -- routing ---------------------------------------------------------------------------------
    def to_candidate(self, features: Any, request_id: str | None) -> bool:
        key: Any = request_id if self._by_request else (features.get(self._key) if type(features) is dict else None)
        return (bucket(key) if key is not None else random.random()) < self._weight

    def predict(self, primary: ServingVersion, features: Any, request_id: str | None) -> Prediction:
        if self.mode == "split":
            if self.to_candidate(features, request_id):
                p = self.candidate.predict(features, request_id)
                p.variant = CANDIDATE
                return p
            p = primary.predict(features, request_id)
            p.variant = PRIMARY
            return p
        p = primary.predict(features, request_id)
        p.variant = PRIMARY
        if random.random() < self.options.shadow_sample:
            self._offer(features, p)
        return p

    def predict_batch(self, primary: ServingVersion, rows: Any) -> PredictionBatch:
        if self.mode == "shadow":
            out = primary.predict_batch(rows)
            shown = list(out)
            for row, p in zip(_rows(rows), shown, strict=False):
                p.variant = PRIMARY
                if random.random() < self.options.shadow_sample:
                    self._offer(row, p)
            return PredictionBatch.of_rows(shown, primary.version, out.latency_ms, primary.classes)
        items = _rows(rows)
        to_cand = [self.to_candidate(r, None) for r in items]
        answers: list[Prediction | None] = [None] * len(items)
        for variant, sv, want in ((PRIMARY, primary, False), (CANDIDATE, self.candidate, True)):
            idx = [i for i, c in enumerate(to_cand) if c is want]
            if idx:
                got = sv.predict_batch([items[i] for i in idx])
                for i, p in zip(idx, got, strict=True):
                    p.variant = variant
                    answers[i] = p
        done = [p for p in answers if p is not None]
        return PredictionBatch.of_rows(done, primary.version, max((p.latency_ms for p in done), default=0.0),
                                       primary.classes)

    # -- shadow -----------------------------------------------------------------------------------
    def _offer(self, features: Any, p: Prediction) -> None:
        q = self._shadow_q
        if len(q) < self._queue_max:
            q.append((features, p))
            self.sampled += 1
        else:
            self.dropped += 1

    def _shadow_loop(self) -> None:
        """Score what was sampled in batches (one model call for whatever waits, up to 16):
        far less Python per row than one call each, so less time holding the GIL the callers need."""
        q = self._shadow_q
        while not self._stopped.is_set():
            items: list[tuple[Any, Prediction]] = []
            try:
                while len(items) < SHADOW_BATCH:
                    items.append(q.popleft())
            except IndexError:
                pass
            if items:
                self._score([f for f, _ in items], [p for _, p in items])
            else:
                self._stopped.wait(0.002)

    def _score(self, rows: list[Any], primary: list[Prediction]) -> None:
        try:
            got: list[Prediction] = list(self.candidate.predict_batch(rows)) if len(rows) > 1 \
                else [self.candidate.predict(rows[0], None)]
        except Exception:  # the candidate's own failure: counted, never the caller's
            with self._lock:
                self.shadow["failed"] += len(rows)
            return
        compared = []
        for p, c in zip(primary, got, strict=True):
            pp, cp = p.probabilities, c.probabilities
            compared.append((p.value == c.value, _diffs(p.value, list(pp.values()) if pp else None,
                                                        c.value, list(cp.values()) if cp else None)))
        with self._lock:
            s = self.shadow
            for agree, diffs in compared:
                s["compared"] += 1
                s["label_agree"] += int(agree)
                if diffs is not None:
                    s["max_abs_diff"] = max(s["max_abs_diff"], diffs[0])
                    s["sum_abs_diff"] += diffs[1]

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every sampled request was scored by the candidate (tests, reports)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                s = self.shadow
                if s["compared"] + s["failed"] >= self.sampled:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        if self._thread is not None:
            self._stopped.set()
            self._thread.join(2.0)

    # -- figures ------------------------------------------------------------------------------------
    def snapshot(self, primary: ServingVersion) -> dict[str, Any]:
        """The ``variants`` section: per variant counts, error and fallback rate, p50/p95/p99
        since the experiment started; in shadow mode, the agreement."""
        base_version, base = self._base[PRIMARY]
        out: dict[str, Any] = {"mode": self.mode, "weight": self._weight, "key": self._key}
        for name, sv, minus in ((PRIMARY, primary, base if primary.version == base_version else None),
                                (CANDIDATE, self.candidate, None)):
            s = _summary(sv.metrics.totals())
            if minus is not None:
                s = {k: s[k] - minus.get(k, 0) for k in s}
            total = s["count"]
            pct = latency_percentiles(list(sv.metrics.latencies))
            out[name] = {"model_version": sv.version, **s,
                         "error_rate": round(s["error"] / total, 6) if total else None,
                         "fallback_rate": round(s["fallback"] / total, 6) if total else None,
                         "latency_ms": {"p50": pct["p50"], "p95": pct["p95"], "p99": pct["p99"]}}
        if self.mode == "shadow":
            with self._lock:
                sh = dict(self.shadow)
            n = int(sh["compared"])
            out["agreement"] = {"sample": self.options.shadow_sample, "sampled": self.sampled, "compared": n,
                                "dropped": self.dropped, "failed": int(sh["failed"]),
                                "label_agreement": round(sh["label_agree"] / n, 6) if n else None,
                                "max_abs_diff": round(sh["max_abs_diff"], 6) if n else None,
                                "mean_abs_diff": round(sh["sum_abs_diff"] / n, 6) if n else None}
        return out


def _summary(t: Totals) -> dict[str, int]:
    out = {"count": 0, "model": 0, "cache": 0, "fallback": 0, "error": 0, "invalid_input": 0}
    for (_ver, source, outcome), n in t[0].items():
        slot = source if source in ("model", "cache", "fallback") else outcome
        if slot in out:
            out[slot] += n
        out["count"] += n
    return out


def _diffs(v1: Any, p1: list[float] | None, v2: Any, p2: list[float] | None) -> tuple[float, float] | None:
    """(max, mean) absolute difference of the probabilities, or of numeric values (regression)."""
    if p1 is not None and p2 is not None and len(p1) == len(p2) and p1:
        d = [abs(a - b) for a, b in zip(p1, p2, strict=True)]
        return max(d), sum(d) / len(d)
    try:
        d1 = abs(float(v1) - float(v2))
    except (TypeError, ValueError):
        return None
    return (d1, d1) if math.isfinite(d1) else None


def _rows(rows: Any) -> list[Any]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        return list(rows.to_dict("records"))
    return list(rows)


class VariantsCollector:
    """Prometheus families of the running experiment (none when there is none)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.rt.sections.get("variants", lambda: {})()
        if not snap:
            return
        name = self.rt.model_name
        counts = CounterMetricFamily("model_variant_predictions", "Answers per experiment variant since it started, "
                                     "by source", labels=["model", "variant", "version", "source"])
        lat = GaugeMetricFamily("model_variant_latency_ms", "Predict latency per experiment variant, recent window",
                                labels=["model", "variant", "quantile"])
        for variant in (PRIMARY, CANDIDATE):
            v = snap[variant]
            for source in ("model", "cache", "fallback", "error", "invalid_input"):
                counts.add_metric([name, variant, v["model_version"], source], v[source])
            for q in ("p50", "p95", "p99"):
                if v["latency_ms"][q] is not None:
                    lat.add_metric([name, variant, q], v["latency_ms"][q])
        yield counts
        yield lat
        agreement = snap.get("agreement")
        if agreement and agreement["label_agreement"] is not None:
            g = GaugeMetricFamily("model_shadow_label_agreement", "Share of shadowed requests where the candidate's "
                                  "label equals the primary's", labels=["model"])
            g.add_metric([name], agreement["label_agreement"])
            yield g

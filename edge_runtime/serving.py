"""One model version as it serves: the object a swap replaces in a single assignment.

Everything that belongs to a version lives here: the loaded model (session, input adapter,
output decoder), its prediction cache, circuit breaker, drift monitor and counters. What all
versions of a Runtime share (options, the fallback policy, the deadline pool, micro-batching,
the prediction log and the background thread) is one ``Services`` object they point to.

The predict path is kept lean: with the defaults it is validation, one backend call, decode,
a few counter updates and one list append (drift). Everything slow (prediction log, drift
binning, event callbacks) runs on the background thread fed through bounded queues; the
deadline worker pool is used only when ``timeout_ms`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.background import Background
from edge_runtime.breaker import CLOSED, OPEN, CircuitBreaker
from edge_runtime.cache import LRU, input_key, row_keys
from edge_runtime.deadline import DeadlineExceeded, DeadlineRunner, Overloaded
from edge_runtime.drift import DriftMonitor
from edge_runtime.errors import BackendError
from edge_runtime.fallback import FallbackPolicy
from edge_runtime.fastpath import fuse
from edge_runtime.inputs import InputAdapter
from edge_runtime.manifest import Manifest
from edge_runtime.metrics import VersionMetrics
from edge_runtime.microbatch import MicroBatcher
from edge_runtime.model import LoadedModel
from edge_runtime.options import RuntimeOptions
from edge_runtime.prediction import Prediction, PredictionBatch
from edge_runtime.predlog import PredictionLog

log = logging.getLogger(__name__)
_now_ns = time.perf_counter_ns


@dataclass
class Services:
    """What every serving version of one Runtime shares."""

    options: RuntimeOptions
    fallback: FallbackPolicy
    bg: Background
    deadline: DeadlineRunner | None = None
    batcher: MicroBatcher | None = None
    plog: PredictionLog | None = None
    _last_event: dict[str, float] = field(default_factory=dict)

    def model_error(self, name: str, version: str, reason: str, exc: BaseException | str) -> None:
        """Emit a ``model_error`` event, at most once per reason every 10 s."""
        if not self.bg.subscribers:
            return
        now = time.monotonic()
        if now - self._last_event.get(reason, -1e9) < 10.0:
            return
        self._last_event[reason] = now
        self.bg.emit("model_error", {"model": name, "model_version": version, "reason": reason,
                                     "detail": str(exc)[:300]})


class ServingVersion:
    """One model version with its cache, breaker, drift monitor and metrics.

    ``model`` is None when the version failed to load (``load_error`` says why); it then
    answers from the shared fallback.
    """

    def __init__(self, services: Services, model: LoadedModel | None, manifest: Manifest | None, *,
                 load_error: BaseException | None = None) -> None:
        opts = services.options
        self.services = services
        self.model = model
        self.manifest = manifest
        self.load_error = load_error
        self.name = manifest.name if manifest is not None else "unknown"
        self.version = manifest.version if manifest is not None else "unknown"
        self.classes = manifest.classes if manifest is not None else None
        adapter: InputAdapter | None = model.adapter if model is not None else None
        if adapter is None and manifest is not None:
            try:
                adapter = InputAdapter(manifest)
            except Exception:  # a manifest too broken to validate against
                adapter = None
        if adapter is None and services.fallback.secondary is not None:
            adapter = services.fallback.secondary.adapter
        self.adapter = adapter
        self.tensor = adapter is not None and adapter.layout == "tensor"
        side = bool(manifest is not None and manifest.extra.get("side_inputs"))
        self.cache: LRU | None = (LRU(opts.cache_size, opts.cache_ttl_s)
                                  if opts.cache_size > 0 and (not side or opts.cache_side_inputs) else None)
        self.keyed = adapter is not None and (self.cache is not None or services.fallback.last_good is not None)
        self.breaker = CircuitBreaker(opts.breaker_failures, opts.breaker_failure_rate, opts.breaker_window,
                                      opts.breaker_min_calls, opts.breaker_cooldown_s, self._breaker_changed)
        self.metrics = VersionMetrics(opts.latency_window)
        self.drift: DriftMonitor | None = None
        if (opts.drift_enabled and opts.drift_window > 0 and model is not None and manifest is not None
                and manifest.reference):
            mon = DriftMonitor(manifest.reference, manifest.feature_names, window=opts.drift_window,
                               method=opts.drift_method, threshold=opts.drift_threshold,
                               min_rows=opts.drift_min_rows)
            self.drift = mon if mon.active else None
        self.drift_rows: list[Any] = []
        v = self.version
        self.k_model = (v, "model", "ok")
        self.k_cache = (v, "cache", "ok")
        self.k_fallback = (v, "fallback", "fallback")
        self.k_error = (v, "none", "error")
        self.k_invalid = (v, "none", "invalid_input")
        self.predict: Callable[..., Prediction] = fuse(self) or self.predict_general

    # -- predict ----------------------------------------------------------------------------------
    def predict_general(self, features: Any, request_id: str | None = None) -> Prediction:
        """Every single-row case; ``predict`` is the fused path when one applies (``fastpath``)."""
        t0 = _now_ns()
        adapter = self.adapter
        if adapter is None:
            return self._fallback_one(features, None, None, "model_not_loaded", t0, request_id)
        try:
            feeds = adapter.feeds_one(features)
        except Exception:
            self.metrics.record(self.k_invalid, (_now_ns() - t0) / 1e9)
            raise
        key = None
        cache = self.cache
        if self.keyed:
            key = input_key(feeds)
            if cache is not None:
                hit = cache.get(key)
                if hit is not None:
                    return self._answer("cache", self.k_cache, hit[0], hit[1], None, t0, request_id, feeds)
        model = self.model
        if model is None:
            return self._fallback_one(features, feeds, key, "model_not_loaded", t0, request_id)
        breaker = self.breaker
        if breaker.state != CLOSED and not breaker.allow():
            return self._fallback_one(features, feeds, key, "breaker_open", t0, request_id)
        svc = self.services
        got, reason = self._infer(model, feeds, model.decoder.one, svc.batcher)
        if reason is not None:
            return self._fallback_one(features, feeds, key, reason, t0, request_id)
        value, prow = got
        if key is not None:
            if cache is not None:
                cache.put(key, (value, prow))
            svc.fallback.remember(key, value, prow, self.version)
        dt = _now_ns() - t0
        self.metrics.record(self.k_model, dt / 1e9)
        if self.drift is not None:
            rows = self.drift_rows
            rows.append(((key if key is not None else feeds[adapter.input_name].tobytes()) if self.tensor
                         else feeds, value))
            if len(rows) >= svc.options.drift_chunk:
                self.drift_handoff()
        plog = svc.plog
        if plog is not None and plog.sample():
            self._log("model", None, dt / 1e6, feeds, value, prow)
        return Prediction(value, "model", self.version, dt / 1e6, prow, self.classes, request_id=request_id)

    def _infer(self, model: LoadedModel, feeds: Any, decode: Callable[[Any], Any],
               batcher: Any) -> tuple[Any, str | None]:
        """Run the model and decode its outputs: (decoded, None), or (None, the fallback reason);
        the breaker hears the outcome either way, and a model fault is reported."""
        svc = self.services
        try:
            if batcher is not None:
                outs = batcher.run(model, feeds)
            elif svc.deadline is not None:
                outs = svc.deadline.run(model.backend.run, feeds)
            else:
                outs = model.backend.run(feeds)
        except Exception as exc:
            reason = self._failure_reason(exc, None)
        else:
            try:
                got = decode(outs)
            except ValueError as exc:
                reason = self._failure_reason(exc, outs)
            else:
                self.breaker.success()
                return got, None
        _judge(self.breaker, reason)
        return None, reason

    def failed_one(self, features: Any, feeds: Any, key: bytes | None, exc: Exception, outs: Any, t0: int,
                   request_id: str | None) -> Prediction:
        """A single-row call whose inference raised (``outs`` None) or whose outputs did not
        decode: tell the breaker, report it, answer from the fallback."""
        reason = self._failure_reason(exc, outs)
        _judge(self.breaker, reason)
        return self._fallback_one(features, feeds, key, reason, t0, request_id)

    def _failure_reason(self, exc: Exception, outs: Any) -> str:
        """The fallback reason for an exception from the inference call, or (``outs`` given) from
        decoding its outputs; reported when it is the model's fault."""
        if outs is not None:
            reason = _classify(outs)
            self.services.model_error(self.name, self.version, reason, exc)
            return reason
        if isinstance(exc, DeadlineExceeded):
            return "timeout"
        if isinstance(exc, Overloaded):
            return "overloaded"
        self.services.model_error(self.name, self.version, "backend_error", exc)
        return "backend_error"

    def _answer(self, source: str, mkey: tuple[str, str, str], value: Any, prow: Any, reason: str | None,
                t0: int, request_id: str | None, feeds: Any, version: str | None = None) -> Prediction:
        dt = _now_ns() - t0
        self.metrics.record(mkey, dt / 1e9)
        plog = self.services.plog
        if plog is not None and plog.sample():
            self._log(source, reason, dt / 1e6, feeds, value, prow)
        return Prediction(value, source, version or self.version, dt / 1e6, prow, self.classes, reason=reason,
                          request_id=request_id)

    def _fallback_one(self, features: Any, feeds: Any, key: bytes | None, reason: str, t0: int,
                      request_id: str | None) -> Prediction:
        got = self.services.fallback.answer_one(features, key)
        if got is None:
            self.metrics.record(self.k_error, (_now_ns() - t0) / 1e9)
            raise self._no_answer(reason)
        self.metrics.count("fallback:" + reason)
        value, prow, version = got
        return self._answer("fallback", self.k_fallback, value, prow, reason, t0, request_id, feeds,
                            version=version)

    def _no_answer(self, reason: str) -> BackendError:
        if self.services.fallback.configured:
            none = ("no fallback could answer (the last-good store has no answer for this input and "
                    "there is no working fallback_artifact or fallback_default)")
        else:
            none = "no fallback is configured (set fallback_default, fallback_last_good or fallback_artifact)"
        return BackendError(self.model.backend.name if self.model else "runtime",
                            f"{self.reason_text(reason)}, and {none}")

    def reason_text(self, reason: str) -> str:
        if reason == "model_not_loaded":
            return f"model not loaded: {self.load_error}"
        if reason == "breaker_open":
            return f"circuit breaker open ({self.breaker.last_reason})"
        if reason == "timeout":
            return f"inference overran timeout_ms={self.services.options.timeout_ms}"
        return reason.replace("_", " ")

    def predict_batch(self, rows: Any) -> PredictionBatch:
        t0 = _now_ns()
        adapter = self.adapter
        if adapter is None:
            return self._fallback_batch(rows, None, None, "model_not_loaded", t0)
        try:
            feeds, n = adapter.feeds_batch(rows)
        except Exception:
            self.metrics.record(self.k_invalid, (_now_ns() - t0) / 1e9)
            raise
        model = self.model
        if model is None:
            return self._fallback_batch(rows, feeds, n, "model_not_loaded", t0)
        breaker = self.breaker
        if breaker.state != CLOSED and not breaker.allow():
            return self._fallback_batch(rows, feeds, n, "breaker_open", t0)
        svc = self.services
        got, reason = self._infer(model, feeds, lambda outs: model.decoder.batch(outs, n), None)
        if reason is not None:
            return self._fallback_batch(rows, feeds, n, reason, t0)
        values, proba = got
        if svc.fallback.last_good is not None:
            plist: list[Any] = [None] * n if proba is None else proba.tolist()  # one conversion, not n
            for i, k in enumerate(row_keys(feeds, n)):
                svc.fallback.remember(k, values[i], plist[i], self.version)
        dt = _now_ns() - t0
        self.metrics.record(self.k_model, dt / 1e9, n)
        if self.drift is not None:
            # The drift window is a sample of the traffic: a large batch contributes an even
            # stride of at most drift_chunk rows, so scoring never costs more than inference.
            step = -(-n // svc.options.drift_chunk)
            sample = {k: v[::step] for k, v in feeds.items()} if step > 1 else feeds
            svc.bg.submit(self._drift_add, None, sample, values[::step])
        preds = PredictionBatch(values, "model", self.version, dt / 1e6, proba, self.classes)
        self._log_batch(preds, feeds)
        return preds

    def _fallback_batch(self, rows: Any, feeds: Any, n: int | None, reason: str, t0: int) -> PredictionBatch:
        fallback = self.services.fallback
        if n is None:
            try:
                n = len(rows)
            except TypeError:
                n = 1
        keys = row_keys(feeds, n) if feeds is not None and fallback.last_good is not None else None
        got = fallback.answer_batch(rows, keys, n)
        if got is None:
            self.metrics.record(self.k_error, (_now_ns() - t0) / 1e9, n)
            raise self._no_answer(reason)
        self.metrics.count("fallback:" + reason, n)
        dt = _now_ns() - t0
        self.metrics.record(self.k_fallback, dt / 1e9, n)
        answers = [Prediction(v, "fallback", ver or self.version, dt / 1e6, p, self.classes, reason=reason)
                   for v, p, ver in got]
        preds = PredictionBatch.of_rows(answers, self.version, dt / 1e6, self.classes)
        self._log_batch(preds, feeds)
        return preds

    # -- off the predict path ----------------------------------------------------------------------
    def _log(self, source: str, reason: str | None, ms: float, feeds: Any, value: Any, prow: Any) -> None:
        svc = self.services
        if feeds is None:
            row: Any = None
        elif self.tensor:
            row = np.array(feeds[self.adapter.input_name], copy=True)  # type: ignore[union-attr]
        else:
            row = dict(feeds)
        svc.plog.offer((time.time(), self.version, source, reason, ms, row, value, prow))  # type: ignore[union-attr]
        svc.bg.wake()

    def _log_batch(self, preds: PredictionBatch, feeds: Any) -> None:
        svc = self.services
        plog = svc.plog
        if plog is None:
            return
        for i in range(len(preds)):
            if plog.sample():
                p = preds[i]
                row = None
                if feeds is not None:
                    row = ({k: v[i:i + 1] for k, v in feeds.items()} if not self.tensor
                           else np.array(feeds[self.adapter.input_name][i], copy=True))  # type: ignore[union-attr]
                plog.offer((time.time(), p.model_version, p.source, p.reason, p.latency_ms, row, p.value,
                            p._proba))
        svc.bg.wake()

    def drift_handoff(self) -> None:
        """Hand the single-row drift buffer to the background thread."""
        rows, self.drift_rows = self.drift_rows, []
        if rows:
            self.services.bg.submit(self._drift_add, rows, None, None)

    def _drift_add(self, rows: list[Any] | None, feeds: Any, values: list[Any] | None) -> None:
        """Bin a chunk (background thread): ``rows`` of (bytes-or-feeds, value), or a batch's feeds."""
        mon, adapter = self.drift, self.adapter
        if mon is None or adapter is None:
            return
        if rows is not None:
            values = [v for _, v in rows]
            if self.tensor:
                x = np.frombuffer(b"".join(r for r, _ in rows), dtype=adapter.dtype).reshape(len(rows), -1)
            else:
                x = _columns_matrix(adapter, [r for r, _ in rows])
        else:
            assert values is not None
            x = feeds[adapter.input_name] if self.tensor else _columns_matrix(adapter, [feeds])
        crossed = mon.add(np.asarray(x, dtype=float), values)
        if crossed:
            rep = mon.report()
            self.services.bg.emit("drift_alert", {"model": self.name, "model_version": self.version,
                                                  "method": mon.method, "threshold": mon.threshold,
                                                  "window_rows": rep["window_rows"], "scores": crossed})

    def _breaker_changed(self, old: str, new: str, why: str) -> None:
        if new == OPEN:
            log.warning("circuit breaker open for %s %s: %s", self.name, self.version, why)
        elif new == CLOSED and old != CLOSED:
            log.info("circuit breaker closed for %s %s: %s", self.name, self.version, why)
        if new in (OPEN, CLOSED) and old != new and why != "reset":
            self.services.bg.emit("breaker_" + new, {"model": self.name, "model_version": self.version,
                                                     "from": old, "why": why})

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


def _judge(breaker: Any, reason: str) -> None:
    """What a failed call tells the breaker, which guards against a failing backend (errors,
    hangs, outputs of the wrong shape), not against data. A non-finite output comes from one
    row — a caller's extreme but valid values can overflow a model — so it falls back without
    counting against the breaker (the backend ran: a success for it); an overload is the symptom
    of timeouts already counted."""
    if reason == "non_finite_output":
        breaker.success()
    elif reason != "overloaded":
        breaker.failure(reason)


def _classify(outs: Any) -> str:
    try:
        for o in outs:
            a = np.asarray(o)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                return "non_finite_output"
    except Exception:
        pass
    return "bad_output_shape"


def _columns_matrix(adapter: InputAdapter, feeds_list: list[dict[str, np.ndarray]]) -> np.ndarray:
    cols = []
    for name, kind in zip(adapter.names, adapter.types, strict=True):
        if kind == "string":
            cols.append(np.full(sum(f[name].shape[0] for f in feeds_list), np.nan))
        else:
            cols.append(np.concatenate([np.asarray(f[name], dtype=float).reshape(-1) for f in feeds_list]))
    return np.stack(cols, axis=1)

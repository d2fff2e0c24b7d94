"""The object a product calls: ``edge_runtime.load(...)`` returns a ``Runtime``.

A Runtime always answers and says where the answer came from (``Prediction.source``:
``model``, ``cache`` or ``fallback`` with a ``reason``). Only the caller's own mistakes raise
(``InvalidInput``), plus ``BackendError`` when the model fails and no fallback is configured.

The predict path is kept lean: with the defaults it is validation, one backend call, decode,
a few counter updates and one list append (drift). Everything slow (prediction log, drift
binning, event callbacks) runs on one background thread fed through bounded queues; the
deadline worker pool is used only when ``timeout_ms`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import BackendOptions
from edge_runtime.background import Background, Callback
from edge_runtime.breaker import CLOSED, OPEN, CircuitBreaker
from edge_runtime.cache import LRU, input_key, row_keys
from edge_runtime.deadline import DeadlineExceeded, DeadlineRunner, Overloaded
from edge_runtime.drift import METHODS, DriftMonitor
from edge_runtime.errors import BackendError, ConfigError, ModelLoadError
from edge_runtime.fallback import ConstantDefault, FallbackPolicy
from edge_runtime.inputs import InputAdapter
from edge_runtime.manifest import Manifest, read_manifest
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.microbatch import MicroBatcher
from edge_runtime.model import LoadedModel
from edge_runtime.prediction import Prediction, PredictionBatch
from edge_runtime.predlog import PredictionLog

log = logging.getLogger(__name__)
_now_ns = time.perf_counter_ns


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings of a Runtime; ``load(dir, **options)`` and the device config's ``[runtime]`` fill them.

    Every option is flat and typed so a TOML ``[runtime]`` table maps onto it key by key.
    """

    # -- model ----------------------------------------------------------------------------------
    backend: str = "auto"  # auto | onnx | tflite
    threads: int = 1  # backend intra-op threads
    latency_window: int = 2048  # calls kept for the latency percentiles
    # -- fallback (tried in this order; see edge_runtime/fallback.py) ---------------------------
    fallback_last_good: bool = False  # answer with the model's last answer for the same input
    fallback_last_good_size: int = 10000  # inputs remembered for that
    fallback_artifact: str | None = None  # a second artifact dir (same features) to answer instead
    # constant: a number / list (regression), a class label, or {"value": ..., "probabilities": {...}}
    fallback_default: Any = None
    # -- deadline ---------------------------------------------------------------------------------
    timeout_ms: float | None = None  # per call; None = no deadline and no worker thread hop
    deadline_workers: int = 2  # bounded worker pool used only with timeout_ms
    # -- circuit breaker --------------------------------------------------------------------------
    breaker_failures: int = 5  # consecutive failures that open it; 0 disables the breaker
    breaker_failure_rate: float = 0.5  # ...or this failure rate over the last breaker_window calls
    breaker_window: int = 100
    breaker_min_calls: int = 20  # calls in the window before the rate counts
    breaker_cooldown_s: float = 30.0  # open this long, then one probe call (half-open)
    # -- prediction cache -------------------------------------------------------------------------
    cache_size: int = 0  # entries; 0 = off
    cache_ttl_s: float = 300.0  # 0 = entries never expire (still bounded by cache_size)
    cache_side_inputs: bool = False  # also cache models whose manifest declares side_inputs
    # -- prediction log ---------------------------------------------------------------------------
    log_path: str | None = None  # JSON lines file; None = off
    log_sample_rate: float = 0.0  # fraction of calls logged (every round(1/rate)-th call)
    log_max_mb: float = 16.0  # cap for the log file and its rotated copies together
    log_backups: int = 3  # rotated files kept (.1 ... .N)
    # -- drift ------------------------------------------------------------------------------------
    drift_enabled: bool = True  # on when the manifest has a reference
    drift_window: int = 1000  # recent rows compared with the reference
    drift_method: str = "psi"  # psi | js | ks: the score compared with drift_threshold
    drift_threshold: float | None = None  # None: psi 0.2, js 0.1, ks 0.2
    drift_min_rows: int = 100  # rows in the window before scores count
    drift_chunk: int = 256  # rows handed to the background thread at once
    # -- micro-batching ---------------------------------------------------------------------------
    microbatch_max_size: int = 0  # rows per backend call; 0 = off
    microbatch_max_wait_ms: float = 1.0  # wait for more rows after the first

    def __post_init__(self) -> None:
        def bad(key: str, reason: str) -> ConfigError:
            return ConfigError(reason, key=key)

        if self.backend not in ("auto", "onnx", "tflite", "fake"):
            raise bad("backend", f"must be auto, onnx or tflite, not {self.backend!r}")
        for key in ("threads", "fallback_last_good_size", "deadline_workers", "breaker_failures",
                    "breaker_window", "breaker_min_calls", "cache_size", "log_backups", "drift_window",
                    "drift_min_rows", "microbatch_max_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(key, f"must be a whole number ≥ 0, got {v!r}")
        if self.latency_window < 1 or self.drift_chunk < 1:
            raise bad("latency_window" if self.latency_window < 1 else "drift_chunk", "must be ≥ 1")
        if self.timeout_ms is not None and not self.timeout_ms > 0:
            raise bad("timeout_ms", f"must be > 0 milliseconds (or absent for no deadline), got {self.timeout_ms!r}")
        if not 0.0 < self.breaker_failure_rate <= 1.0:
            raise bad("breaker_failure_rate", f"must be in (0, 1], got {self.breaker_failure_rate!r}")
        if not 0.0 <= self.log_sample_rate <= 1.0:
            raise bad("log_sample_rate", f"must be between 0 and 1, got {self.log_sample_rate!r}")
        for key in ("breaker_cooldown_s", "cache_ttl_s", "log_max_mb", "microbatch_max_wait_ms"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be ≥ 0, got {getattr(self, key)!r}")
        if self.drift_method not in METHODS:
            raise bad("drift_method", f"must be one of {', '.join(METHODS)}, not {self.drift_method!r}")
        if self.log_sample_rate > 0 and not self.log_path:
            raise bad("log_sample_rate", "needs log_path (where to write the sampled predictions)")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> RuntimeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)

    @property
    def has_fallback(self) -> bool:
        return self.fallback_default is not None or self.fallback_artifact is not None or self.fallback_last_good


class _Serving:
    """Everything the predict path reads for one model version, swapped as one reference."""

    __slots__ = ("adapter", "classes", "k_cache", "k_error", "k_fallback", "k_invalid", "k_model", "keyed",
                 "manifest", "model", "tensor", "version")

    def __init__(self, model: LoadedModel | None, manifest: Manifest | None, adapter: InputAdapter | None,
                 keyed: bool) -> None:
        self.model = model
        self.manifest = manifest
        self.adapter = adapter
        self.version = manifest.version if manifest is not None else "unknown"
        self.classes = manifest.classes if manifest is not None else None
        self.keyed = keyed and adapter is not None
        self.tensor = adapter is not None and adapter.layout == "tensor"
        v = self.version
        self.k_model = (v, "model", "ok")
        self.k_cache = (v, "cache", "ok")
        self.k_fallback = (v, "fallback", "fallback")
        self.k_error = (v, "none", "error")
        self.k_invalid = (v, "none", "invalid_input")


def _classify(outs: Any) -> str:
    try:
        for o in outs:
            a = np.asarray(o)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                return "non_finite_output"
    except Exception:
        pass
    return "bad_output_shape"


class Runtime:
    """Serves predictions from one model, with fallback, deadline, breaker, cache, log and drift.

    >>> rt = edge_runtime.load("artifacts/iris", fallback_default="setosa", timeout_ms=20)  # doctest: +SKIP
    >>> p = rt.predict({"sepal length (cm)": 5.1, ...})                                    # doctest: +SKIP
    >>> p.value, p.source, p.reason                                                        # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel | None, options: RuntimeOptions | None = None, *,
                 load_error: BaseException | None = None, artifact_path: str | Path | None = None) -> None:
        self.options = opts = options or RuntimeOptions()
        self._started = time.time()
        self._swap_lock = threading.Lock()
        self._load_error = load_error
        self._artifact_path = Path(artifact_path) if artifact_path else (model.path if model else None)
        self._bg = Background()
        self._last_event: dict[str, float] = {}
        self._closed = False

        # fallback policy
        secondary, self._fallback_error = None, None
        if opts.fallback_artifact:
            try:
                secondary = LoadedModel.open(opts.fallback_artifact, _backend_options(opts), "auto")
            except ModelLoadError as exc:
                self._fallback_error = str(exc)
                log.error("fallback artifact not loaded: %s", exc)
        manifest = model.manifest if model else self._manifest_from_disk()
        if manifest is None and secondary is not None:
            manifest = secondary.manifest
        default = None
        if opts.fallback_default is not None:
            default = ConstantDefault(opts.fallback_default, manifest.classes if manifest else None)
        self._fallback = FallbackPolicy(default=default, secondary=secondary,
                                        last_good_size=opts.fallback_last_good_size if opts.fallback_last_good else 0)

        self._metrics = RuntimeMetrics(manifest.name if manifest else "unknown", opts.latency_window)
        self._metrics.extra_gauges = self._gauges
        self._breaker = CircuitBreaker(opts.breaker_failures, opts.breaker_failure_rate, opts.breaker_window,
                                       opts.breaker_min_calls, opts.breaker_cooldown_s, self._breaker_changed)
        self._cache = LRU(opts.cache_size, opts.cache_ttl_s) if opts.cache_size > 0 else None
        timeout_s = opts.timeout_ms / 1000.0 if opts.timeout_ms else None
        self._deadline = (DeadlineRunner(timeout_s, opts.deadline_workers)
                          if timeout_s and not opts.microbatch_max_size else None)
        self._batcher = (MicroBatcher(opts.microbatch_max_size, opts.microbatch_max_wait_ms, timeout_s)
                         if opts.microbatch_max_size > 0 else None)
        self._plog = (PredictionLog(opts.log_path, sample_rate=opts.log_sample_rate, max_mb=opts.log_max_mb,
                                    backups=opts.log_backups) if opts.log_path and opts.log_sample_rate > 0
                      else None)
        if self._plog is not None:
            self._bg.periodic.append(self._flush_log)
        self._drift: DriftMonitor | None = None
        self._drift_rows: list[Any] = []
        self._st = self._serving(model, manifest)
        if model is None and manifest is not None and secondary is not None \
                and secondary.manifest.feature_names != manifest.feature_names:
            log.warning("fallback artifact's features differ from the model's")

    # -- building ---------------------------------------------------------------------------------
    def _manifest_from_disk(self) -> Manifest | None:
        if self._artifact_path is None:
            return None
        try:
            return read_manifest(self._artifact_path)
        except ModelLoadError:
            return None

    def _serving(self, model: LoadedModel | None, manifest: Manifest | None) -> _Serving:
        opts = self.options
        adapter: InputAdapter | None = model.adapter if model is not None else None
        if adapter is None and manifest is not None:
            try:
                adapter = InputAdapter(manifest)
            except Exception:  # a manifest too broken to validate against
                adapter = None
        if adapter is None and self._fallback.secondary is not None:
            adapter = self._fallback.secondary.adapter
        side = bool(manifest is not None and manifest.extra.get("side_inputs"))
        cache_on = self._cache is not None and (not side or opts.cache_side_inputs)
        keyed = cache_on or self._fallback.last_good is not None
        st = _Serving(model, manifest, adapter, keyed)
        self._cache_on = cache_on
        self._drift = None
        if (opts.drift_enabled and opts.drift_window > 0 and model is not None and manifest is not None
                and manifest.reference):
            mon = DriftMonitor(manifest.reference, manifest.feature_names, window=opts.drift_window,
                               method=opts.drift_method, threshold=opts.drift_threshold,
                               min_rows=opts.drift_min_rows)
            self._drift = mon if mon.active else None
        self._drift_rows = []
        return st

    # -- properties -------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        """The primary model being served (None when it failed to load). For fault injection in
        tests: ``rt.model.backend`` is the live backend object."""
        return self._st.model

    _model = model  # the foundation's name, kept for code that reached in

    @property
    def fallback_model(self) -> LoadedModel | None:
        """The secondary artifact answering as fallback, if configured and loaded."""
        return self._fallback.secondary

    @property
    def manifest(self) -> Manifest:
        m = self._st.manifest
        if m is None:
            raise ModelLoadError(str(self._artifact_path), f"no manifest: {self._load_error}")
        return m

    @property
    def model_version(self) -> str:
        return self._st.version

    @property
    def feature_names(self) -> tuple[str, ...]:
        a = self._st.adapter
        return tuple(a.names) if a is not None else ()

    @property
    def registry(self) -> Any:
        """This Runtime's own ``prometheus_client.CollectorRegistry``."""
        return self._metrics.registry

    # -- predict ----------------------------------------------------------------------------------
    def predict(self, features: Any, *, request_id: str | None = None) -> Prediction:
        """Predict one row: a dict of named features or a 1-D array in feature order.

        Always answers unless the input is invalid (``InvalidInput``) or the model fails with no
        fallback configured (``BackendError``).
        """
        t0 = _now_ns()
        st = self._st  # one read: a concurrent swap cannot mix two models in one call
        adapter = st.adapter
        if adapter is None:
            return self._fallback_one(st, features, None, None, "model_not_loaded", t0, request_id)
        try:
            feeds = adapter.feeds_one(features)
        except Exception:
            self._metrics.record(st.k_invalid, (_now_ns() - t0) / 1e9)
            raise
        key = None
        if st.keyed:
            key = input_key(feeds)
            if self._cache_on:
                hit = self._cache.get((st.version, key))  # type: ignore[union-attr]
                if hit is not None:
                    return self._answer(st, "cache", st.k_cache, hit[0], hit[1], None, t0, request_id, feeds)
        model = st.model
        if model is None:
            return self._fallback_one(st, features, feeds, key, "model_not_loaded", t0, request_id)
        breaker = self._breaker
        if breaker.state != CLOSED and not breaker.allow():
            return self._fallback_one(st, features, feeds, key, "breaker_open", t0, request_id)
        reason = None
        try:
            if self._batcher is not None:
                outs = self._batcher.run(model, feeds)
            elif self._deadline is not None:
                outs = self._deadline.run(model.backend.run, feeds)
            else:
                outs = model.backend.run(feeds)
        except Exception as exc:
            reason = self._failure_reason(st, exc)
        else:
            try:
                value, prow = model.decoder.one(outs)
            except ValueError as exc:
                reason = _classify(outs)
                self._model_error(st, reason, exc)
        if reason is not None:
            if reason != "overloaded":  # overload is the symptom of timeouts already counted
                breaker.failure(reason)
            return self._fallback_one(st, features, feeds, key, reason, t0, request_id)
        breaker.success()
        if key is not None:
            if self._cache_on:
                self._cache.put((st.version, key), (value, prow))  # type: ignore[union-attr]
            self._fallback.remember(key, value, prow, st.version)
        dt = _now_ns() - t0
        self._metrics.record(st.k_model, dt / 1e9)
        if self._drift is not None:
            rows = self._drift_rows
            rows.append(((key if key is not None else feeds[adapter.input_name].tobytes()) if st.tensor
                         else feeds, value))
            if len(rows) >= self.options.drift_chunk:
                self._drift_handoff()
        plog = self._plog
        if plog is not None and plog.sample():
            self._log(st, "model", None, dt / 1e6, feeds, value, prow)
        return Prediction(value, "model", st.version, dt / 1e6, prow, st.classes, request_id=request_id)

    def _failure_reason(self, st: _Serving, exc: Exception) -> str:
        """The fallback reason for an exception from the inference call (reported if it is the model's)."""
        if isinstance(exc, DeadlineExceeded):
            return "timeout"
        if isinstance(exc, Overloaded):
            return "overloaded"
        self._model_error(st, "backend_error", exc)
        return "backend_error"

    def _answer(self, st: _Serving, source: str, mkey: tuple[str, str, str], value: Any, prow: Any,
                reason: str | None, t0: int, request_id: str | None, feeds: Any,
                version: str | None = None) -> Prediction:
        dt = _now_ns() - t0
        self._metrics.record(mkey, dt / 1e9)
        plog = self._plog
        if plog is not None and plog.sample():
            self._log(st, source, reason, dt / 1e6, feeds, value, prow)
        return Prediction(value, source, version or st.version, dt / 1e6, prow, st.classes, reason=reason,
                          request_id=request_id)

    def _fallback_one(self, st: _Serving, features: Any, feeds: Any, key: bytes | None, reason: str, t0: int,
                      request_id: str | None) -> Prediction:
        got = self._fallback.answer_one(features, key)
        if got is None:
            self._metrics.record(st.k_error, (_now_ns() - t0) / 1e9)
            raise BackendError(st.model.backend.name if st.model else "runtime",
                               f"{self._reason_text(reason)}, and {self._no_fallback_text()}")
        self._metrics.count("fallback:" + reason)
        value, prow, version = got
        return self._answer(st, "fallback", st.k_fallback, value, prow, reason, t0, request_id, feeds,
                            version=version)

    def _no_fallback_text(self) -> str:
        if self._fallback.configured:
            return ("no fallback could answer (the last-good store has no answer for this input and "
                    "there is no working fallback_artifact or fallback_default)")
        return "no fallback is configured (set fallback_default, fallback_last_good or fallback_artifact)"

    def _reason_text(self, reason: str) -> str:
        if reason == "model_not_loaded":
            return f"model not loaded: {self._load_error}"
        if reason == "breaker_open":
            return f"circuit breaker open ({self._breaker.last_reason})"
        if reason == "timeout":
            return f"inference overran timeout_ms={self.options.timeout_ms}"
        return reason.replace("_", " ")

    def predict_batch(self, rows: Any) -> Sequence[Prediction]:
        """Predict many rows: a 2-D array, a list of dicts or rows, or a pandas DataFrame.

        Rows are validated together (the first bad row raises ``InvalidInput``); the model runs
        them in one call; when it fails, every row gets the fallback with the same reason.
        The prediction cache is not used for batches.
        """
        t0 = _now_ns()
        st = self._st
        adapter = st.adapter
        if adapter is None:
            return self._fallback_batch(st, rows, None, None, "model_not_loaded", t0)
        try:
            feeds, n = adapter.feeds_batch(rows)
        except Exception:
            self._metrics.record(st.k_invalid, (_now_ns() - t0) / 1e9)
            raise
        model = st.model
        if model is None:
            return self._fallback_batch(st, rows, feeds, n, "model_not_loaded", t0)
        breaker = self._breaker
        if breaker.state != CLOSED and not breaker.allow():
            return self._fallback_batch(st, rows, feeds, n, "breaker_open", t0)
        reason = None
        try:
            if self._deadline is not None:
                outs = self._deadline.run(model.backend.run, feeds)
            else:
                outs = model.backend.run(feeds)
        except Exception as exc:
            reason = self._failure_reason(st, exc)
        else:
            try:
                model.decoder.check(outs, n)
            except ValueError as exc:
                reason = _classify(outs)
                self._model_error(st, reason, exc)
        if reason is not None:
            if reason != "overloaded":
                breaker.failure(reason)
            return self._fallback_batch(st, rows, feeds, n, reason, t0)
        breaker.success()
        values, proba = model.decoder.decode(outs)
        if self._fallback.last_good is not None:
            plist: list[Any] = [None] * n if proba is None else proba.tolist()  # one conversion, not n
            for i, k in enumerate(row_keys(feeds, n)):
                self._fallback.remember(k, values[i], plist[i], st.version)
        dt = _now_ns() - t0
        ms = dt / 1e6
        self._metrics.record(st.k_model, dt / 1e9, n)
        if self._drift is not None:
            # The drift window is a sample of the traffic: a large batch contributes an even
            # stride of at most drift_chunk rows, so scoring never costs more than inference.
            step = -(-n // self.options.drift_chunk)
            if step > 1:
                sample = {k: v[::step] for k, v in feeds.items()}
                self._bg.submit(self._drift_add, self._drift, st, None, sample, values[::step])
            else:
                self._bg.submit(self._drift_add, self._drift, st, None, feeds, values)
        preds = PredictionBatch(values, "model", st.version, ms, proba, st.classes)
        self._log_batch(st, preds, feeds)
        return preds

    def _fallback_batch(self, st: _Serving, rows: Any, feeds: Any, n: int | None, reason: str,
                        t0: int) -> Sequence[Prediction]:
        if n is None:
            try:
                n = len(rows)
            except TypeError:
                n = 1
        keys = row_keys(feeds, n) if feeds is not None and self._fallback.last_good is not None else None
        got = self._fallback.answer_batch(rows, keys, n)
        if got is None:
            self._metrics.record(st.k_error, (_now_ns() - t0) / 1e9, n)
            raise BackendError(st.model.backend.name if st.model else "runtime",
                               f"{self._reason_text(reason)}, and {self._no_fallback_text()}")
        self._metrics.count("fallback:" + reason, n)
        dt = _now_ns() - t0
        self._metrics.record(st.k_fallback, dt / 1e9, n)
        preds = [Prediction(v, "fallback", ver or st.version, dt / 1e6, p, st.classes, reason=reason)
                 for v, p, ver in got]
        self._log_batch(st, preds, feeds)
        return preds

    # -- off the predict path ----------------------------------------------------------------------
    def _log(self, st: _Serving, source: str, reason: str | None, ms: float, feeds: Any, value: Any,
             prow: Any) -> None:
        if feeds is None:
            row: Any = None
        elif st.tensor:
            row = np.array(feeds[st.adapter.input_name], copy=True)  # type: ignore[union-attr]
        else:
            row = dict(feeds)
        self._plog.offer((time.time(), st.version, source, reason, ms, row, value, prow))  # type: ignore[union-attr]
        self._bg.wake()

    def _log_batch(self, st: _Serving, preds: Sequence[Prediction], feeds: Any) -> None:
        plog = self._plog
        if plog is None:
            return
        for i in range(len(preds)):
            if plog.sample():
                p = preds[i]
                row = None
                if feeds is not None:
                    row = ({k: v[i:i + 1] for k, v in feeds.items()} if not st.tensor
                           else np.array(feeds[st.adapter.input_name][i], copy=True))  # type: ignore[union-attr]
                plog.offer((time.time(), p.model_version, p.source, p.reason, p.latency_ms, row, p.value,
                            p._proba))
        self._bg.wake()

    def _flush_log(self) -> None:
        if self._plog is not None:
            self._plog.flush(self.feature_names, self._metrics.model_name)

    def _drift_handoff(self) -> None:
        rows, self._drift_rows = self._drift_rows, []
        self._bg.submit(self._drift_add, self._drift, self._st, rows, None, None)

    def _drift_add(self, mon: DriftMonitor | None, st: _Serving, rows: list[Any] | None, feeds: Any,
                   values: list[Any] | None) -> None:
        """Bin a chunk (background thread): ``rows`` of (bytes-or-feeds, value), or a batch's feeds."""
        if mon is None or st.adapter is None:
            return
        adapter = st.adapter
        if rows is not None:
            rows = list(rows)
            if not rows:
                return
            values = [v for _, v in rows]
            if st.tensor:
                x = np.frombuffer(b"".join(r for r, _ in rows), dtype=adapter.dtype).reshape(len(rows), -1)
            else:
                x = _columns_matrix(adapter, [r for r, _ in rows])
        else:
            assert values is not None
            x = (feeds[adapter.input_name] if st.tensor else _columns_matrix(adapter, [feeds]))
        crossed = mon.add(np.asarray(x, dtype=float), values)
        if crossed:
            rep = mon.report()
            self._bg.emit("drift_alert", {"model": self._metrics.model_name, "model_version": st.version,
                                          "method": mon.method, "threshold": mon.threshold,
                                          "window_rows": rep["window_rows"], "scores": crossed})

    def _breaker_changed(self, old: str, new: str, why: str) -> None:
        if new == OPEN:
            log.warning("circuit breaker open for %s: %s", self._metrics.model_name, why)
        elif new == CLOSED and old != CLOSED:
            log.info("circuit breaker closed for %s: %s", self._metrics.model_name, why)
        if new in (OPEN, CLOSED) and old != new and why != "reset":
            self._bg.emit("breaker_" + new, {"model": self._metrics.model_name,
                                             "model_version": self._st.version if hasattr(self, "_st") else None,
                                             "from": old, "why": why})

    def _model_error(self, st: _Serving, reason: str, exc: BaseException) -> None:
        """Emit a model_error event, at most once per reason every 10 s."""
        if not self._bg.subscribers:
            return
        now = time.monotonic()
        if now - self._last_event.get(reason, -1e9) < 10.0:
            return
        self._last_event[reason] = now
        self._bg.emit("model_error", {"model": self._metrics.model_name, "model_version": st.version,
                                      "reason": reason, "detail": str(exc)[:300]})

    def subscribe(self, callback: Callback) -> None:
        """Call ``callback(kind, data)`` for ``drift_alert``, ``breaker_open``, ``breaker_closed``
        and ``model_error`` events, from the Runtime's background thread (never the predict path).
        A Runtime that started without its model reports that at once as a ``model_error``."""
        self._bg.subscribers.append(callback)
        self._bg.start()
        if self._st.model is None and self._load_error is not None:
            self._bg.submit(_call, callback, "model_error", {
                "model": self._metrics.model_name, "model_version": self._st.version,
                "reason": "model_not_loaded", "detail": str(self._load_error)[:300]})

    # -- introspection ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness (threads alive) and readiness (model loaded, smoke-tested, breaker not open)."""
        st = self._st
        m = st.model
        live_reasons = []
        if self._bg.started and not self._bg.alive and not self._closed:
            live_reasons.append("background thread stopped")
        if self._batcher is not None and not self._batcher.alive and not self._closed:
            live_reasons.append("micro-batching thread stopped")
        if self._closed:
            live_reasons.append("runtime closed")
        reasons = []
        if m is None:
            reasons.append(f"model not loaded: {self._load_error}")
        if self._breaker.state == OPEN:
            reasons.append(f"circuit breaker open: {self._breaker.last_reason}")
        reasons.extend(live_reasons)
        smoke = "none" if m is None or not m.manifest.smoke else ("passed" if m.smoke_ok else "failed")
        if m is not None and m.manifest.smoke and not m.smoke_ok:
            reasons.append("smoke test not passed")
        out: dict[str, Any] = {
            "live": not live_reasons,
            "ready": not reasons,
            "reasons": reasons,
            "model": self._metrics.model_name,
            "model_version": st.version,
            "loaded": m is not None,
            "backend": m.manifest.backend if m is not None else None,
            "smoke_test": smoke,
            "breaker": self._breaker.state,
            "fallback": self._fallback.describe(),
            "uptime_s": round(time.time() - self._started, 3),
        }
        if self._fallback_error:
            out["fallback"]["error"] = self._fallback_error
        return out

    def metrics(self) -> dict[str, Any]:
        """Counters, latency percentiles and component state, as a plain dict."""
        counts, other, _, _ = self._metrics.totals()
        st = self._st
        by_source = {"model": 0, "cache": 0, "fallback": 0, "invalid_input": 0, "error": 0}
        by_version: dict[str, dict[str, int]] = {}
        for (ver, source, outcome), n in counts.items():
            slot = source if source in ("model", "cache", "fallback") else outcome
            by_source[slot] = by_source.get(slot, 0) + n
            v = by_version.setdefault(ver, {})
            v[slot] = v.get(slot, 0) + n
        out: dict[str, Any] = {
            "model": self._metrics.model_name,
            "model_version": st.version,
            "loaded": st.model is not None,
            "predictions": by_source,
            "by_version": by_version,
            "fallbacks": {k[9:]: n for k, n in sorted(other.items()) if k.startswith("fallback:")},
            "latency_ms": self._metrics.percentiles(),
            "breaker": self._breaker.snapshot(),
            "cache": {"enabled": self._cache_on, "hits": self._cache.hits if self._cache is not None else 0,
                      "misses": self._cache.misses if self._cache is not None else 0,
                      "size": len(self._cache) if self._cache is not None else 0,
                      "max_size": self.options.cache_size},
        }
        if self._deadline is not None:
            out["deadline"] = self._deadline.snapshot()
        if self._batcher is not None:
            out["microbatch"] = self._batcher.snapshot()
        if self._plog is not None:
            out["prediction_log"] = {"path": str(self._plog.path), "sample_every": self._plog.every,
                                     "written": self._plog.written, "dropped": self._plog.dropped,
                                     "errors": self._plog.errors}
        if self._drift is not None:
            rep = self._drift.report()
            out["drift"] = {"method": rep["method"], "window_rows": rep["window_rows"], "drifted": rep["drifted"],
                            "scores": {k: v[rep["method"]] for k, v in rep["features"].items()}}
        return out

    def _gauges(self) -> dict[str, Any]:
        g: dict[str, Any] = {"breaker_state": self._breaker.state,
                             "cache_hits": self._cache.hits if self._cache is not None else 0,
                             "cache_misses": self._cache.misses if self._cache is not None else 0,
                             "loaded": self._st.model is not None,
                             "version": self._st.version, "ready": self.health()["ready"]}
        if self._plog is not None:
            g["log_dropped"] = self._plog.dropped
        if self._drift is not None:
            rep = self._drift.report()
            g["drift"] = dict(rep["features"])
            if rep["prediction"]:
                g["drift"]["__prediction__"] = rep["prediction"]
        return g

    def prometheus_text(self) -> bytes:
        """Prometheus text exposition of this Runtime's metrics (``model_prediction_*``)."""
        return self._metrics.prometheus_text()

    def drift(self) -> dict[str, Any]:
        """Drift scores of the recent window against the manifest's reference (psi, js, ks per
        feature and for the prediction), the method and threshold in force, and which drifted."""
        mon = self._drift
        if mon is None:
            why = ("disabled by drift_enabled = false" if not self.options.drift_enabled
                   else "the manifest has no reference histograms" if self._st.model is not None
                   else "no model loaded")
            return {"enabled": False, "reason": why}
        if self._drift_rows:
            self._drift_handoff()
        self.flush()
        return {"enabled": True, **mon.report()}

    def flush(self) -> None:
        """Process everything queued for the background thread now (drift chunks, log records)."""
        self._bg.drain()

    # -- lifecycle ------------------------------------------------------------------------------
    def swap(self, path: str | Path) -> LoadedModel | None:
        """Load, verify and smoke-test another artifact, then serve it; returns the old model.

        The new model is fully ready before the reference changes, so a call in flight
        finishes on the old one and the next call uses the new one; cached answers of other
        versions are never served (the cache keys on the version and is cleared). The breaker
        starts closed for the new model. The caller closes the old model when it no longer
        needs it for rollback (None when the Runtime had started without its model).
        """
        new = LoadedModel.open(path, _backend_options(self.options), self.options.backend)
        with self._swap_lock:
            old = self._st.model
            if self._drift_rows:
                self._drift_handoff()
            self._st = self._serving(new, new.manifest)
            self._metrics.model_name = new.manifest.name
            self._artifact_path = Path(path)
            self._load_error = None
            if self._cache is not None:
                self._cache.clear()
            self._breaker.reset()
        return old

    def close(self) -> None:
        self._closed = True
        if self._batcher is not None:
            self._batcher.close()
        if self._deadline is not None:
            self._deadline.close()
        self._bg.close()
        if self._st.model is not None:
            self._st.model.close()
        self._fallback.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(cb: Callback, kind: str, data: dict[str, Any]) -> None:
    try:
        cb(kind, data)
    except Exception:
        log.exception("event subscriber %r failed on %s", cb, kind)


def _columns_matrix(adapter: InputAdapter, feeds_list: list[dict[str, np.ndarray]]) -> np.ndarray:
    cols = []
    for name, kind in zip(adapter.names, adapter.types, strict=True):
        if kind == "string":
            cols.append(np.full(sum(f[name].shape[0] for f in feeds_list), np.nan))
        else:
            cols.append(np.concatenate([np.asarray(f[name], dtype=float).reshape(-1) for f in feeds_list]))
    return np.stack(cols, axis=1)


def _backend_options(options: RuntimeOptions) -> BackendOptions:
    return BackendOptions(threads=options.threads)


def _active_in_store(data_dir: str | Path) -> Path | None:
    if not (Path(data_dir) / "models").is_dir():
        return None  # no agent has run here: nothing to prefer, and nothing to create
    from edge_runtime.store import ModelStore

    store = ModelStore(data_dir)
    ref = store.active()
    return store.path(ref) if ref is not None and store.has(ref) else None


def load(path: str | Path | None = None, *, config: str | Path | None = None, **options: Any) -> Runtime:
    """Load an artifact directory and return a Runtime.

    Verifies the model file against the manifest, opens the backend, and runs the smoke
    test before returning. If that fails and a fallback is configured, the Runtime still
    starts and answers from the fallback (``health()["ready"]`` is False with the reason);
    without a fallback the ``ModelLoadError`` is raised. ``config=`` loads the model named
    by a device config instead.
    """
    if config is not None:
        from edge_runtime.config import load_config  # the device agent's config

        cfg = load_config(config)
        # the version the agent last activated (an update may have replaced the configured one)
        path = path or _active_in_store(cfg.device.data_dir) or cfg.model.artifact
        options = {**cfg.runtime_options(), **options}
    if path is None:
        raise ConfigError("load() needs an artifact directory or config=")
    opts = RuntimeOptions.from_kwargs(**options)
    try:
        model = LoadedModel.open(path, _backend_options(opts), opts.backend)
    except ModelLoadError as exc:
        if opts.fallback_default is None and not opts.fallback_artifact:
            raise  # nothing could answer (a last-good store starts empty)
        rt = Runtime(None, opts, load_error=exc, artifact_path=path)
        if rt._fallback.default is None and rt._fallback.secondary is None:
            rt.close()  # the fallback artifact failed to load too
            raise
        log.error("serving from the fallback: %s", exc)
        return rt
    return Runtime(model, opts, artifact_path=path)

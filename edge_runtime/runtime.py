"""The object a product calls: ``edge_runtime.load(...)`` returns a ``Runtime``.

A Runtime always answers and says where the answer came from (``Prediction.source``:
``model``, ``cache`` or ``fallback`` with a ``reason``). Only the caller's own mistakes raise
(``InvalidInput``), plus ``BackendError`` when the model fails and no fallback is configured.

Which model serves is one reference, ``Runtime.serving`` (a ``ServingVersion`` holding the
session, cache, breaker, drift monitor and counters of that version). ``swap`` builds and
smoke-tests the next version completely, then replaces that reference in one assignment: a
call in flight finishes on the version it started on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime import health
from edge_runtime.background import Background, Callback
from edge_runtime.deadline import DeadlineRunner
from edge_runtime.errors import ModelLoadError
from edge_runtime.experiment import Experiment, ExperimentOptions, VariantsCollector
from edge_runtime.fallback import ConstantDefault, FallbackPolicy
from edge_runtime.manifest import Manifest, read_manifest
from edge_runtime.metrics import MetricsBook
from edge_runtime.microbatch import MicroBatcher
from edge_runtime.model import LoadedModel
from edge_runtime.options import RuntimeOptions, backend_options
from edge_runtime.prediction import Prediction, PredictionBatch
from edge_runtime.predlog import PredictionLog
from edge_runtime.serving import Services, ServingVersion

log = logging.getLogger(__name__)


class Runtime:
    """Serves predictions from one model, with fallback, deadline, breaker, cache, log and drift.

    >>> rt = edge_runtime.load("artifacts/iris", fallback_default="setosa", timeout_ms=20)  # doctest: +SKIP
    >>> p = rt.predict({"sepal length (cm)": 5.1, ...})                                    # doctest: +SKIP
    >>> p.value, p.source, p.reason                                                        # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel | None, options: RuntimeOptions | None = None, *,
                 load_error: BaseException | None = None, artifact_path: str | Path | None = None) -> None:
        self.options = opts = options or RuntimeOptions()
        self.started_at = time.time()
        self.closed = False
        self._swap_lock = threading.Lock()
        self._artifact_path = Path(artifact_path) if artifact_path else (model.path if model else None)

        secondary, self.fallback_error = None, None
        if opts.fallback_artifact:
            try:
                secondary = LoadedModel.open(opts.fallback_artifact, backend_options(opts), "auto")
            except ModelLoadError as exc:
                self.fallback_error = str(exc)
                log.error("fallback artifact not loaded: %s", exc)
        manifest = model.manifest if model else self._manifest_from_disk()
        if manifest is None and secondary is not None:
            manifest = secondary.manifest
        default = None
        if opts.fallback_default is not None:
            default = ConstantDefault(opts.fallback_default, manifest.classes if manifest else None)
        fallback = FallbackPolicy(default=default, secondary=secondary,
                                  last_good_size=opts.fallback_last_good_size if opts.fallback_last_good else 0)
        timeout_s = opts.timeout_ms / 1000.0 if opts.timeout_ms else None
        self.services = Services(
            options=opts, fallback=fallback, bg=Background(),
            deadline=DeadlineRunner(timeout_s, opts.deadline_workers) if timeout_s and not opts.microbatch_max_size
            else None,
            batcher=MicroBatcher(opts.microbatch_max_size, opts.microbatch_max_wait_ms, timeout_s)
            if opts.microbatch_max_size > 0 else None,
            plog=PredictionLog(opts.log_path, sample_rate=opts.log_sample_rate, max_mb=opts.log_max_mb,
                               backups=opts.log_backups) if opts.log_path and opts.log_sample_rate > 0 else None)
        if self.services.plog is not None:
            self.services.bg.periodic.append(self._flush_log)
        self._book = MetricsBook(manifest.name if manifest else "unknown")
        self._book.extra_gauges = lambda: health.gauges(self)
        self._book.extra_counters = self.cache_counts
        self._retired_cache = [0, 0]  # hits and misses of versions no longer serving
        self.sections: dict[str, Callable[[], dict[str, Any]]] = {}  # other parts' figures in metrics()
        self._exp: Experiment | None = None
        self._retired_candidate: ServingVersion | None = None
        self._variants_collector: Any = None
        self._st = ServingVersion(self.services, model, manifest, load_error=load_error)
        self._book.serve(self._st.metrics)
        if model is None and manifest is not None and secondary is not None \
                and secondary.manifest.feature_names != manifest.feature_names:
            log.warning("fallback artifact's features differ from the model's")

    def _manifest_from_disk(self) -> Manifest | None:
        if self._artifact_path is None:
            return None
        try:
            return read_manifest(self._artifact_path)
        except ModelLoadError:
            return None

    # -- properties -------------------------------------------------------------------------------
    @property
    def serving(self) -> ServingVersion:
        """The version serving now (its model, cache, breaker, drift monitor and metrics)."""
        return self._st

    @property
    def model(self) -> LoadedModel | None:
        """The primary model being served (None when it failed to load). For fault injection in
        tests: ``rt.model.backend`` is the live backend object."""
        return self._st.model

    _model = model  # the foundation's name, kept for code that reached in

    @property
    def fallback_model(self) -> LoadedModel | None:
        """The secondary artifact answering as fallback, if configured and loaded."""
        return self.services.fallback.secondary

    @property
    def manifest(self) -> Manifest:
        m = self._st.manifest
        if m is None:
            raise ModelLoadError(str(self._artifact_path), f"no manifest: {self._st.load_error}")
        return m

    @property
    def model_version(self) -> str:
        return self._st.version

    @property
    def model_name(self) -> str:
        return self._book.model_name

    @property
    def artifact_path(self) -> Path | None:
        """The artifact directory the serving version was loaded from."""
        return self._artifact_path

    @property
    def feature_names(self) -> tuple[str, ...]:
        a = self._st.adapter
        return tuple(a.names) if a is not None else ()

    @property
    def registry(self) -> Any:
        """This Runtime's own ``prometheus_client.CollectorRegistry``."""
        return self._book.registry

    @property
    def book(self) -> MetricsBook:
        """Counters of every version this Runtime served (cumulative) and the current one."""
        return self._book

    # -- predict ----------------------------------------------------------------------------------
    def predict(self, features: Any, *, request_id: str | None = None) -> Prediction:
        """Predict one row: a dict of named features or a 1-D array in feature order.

        Always answers unless the input is invalid (``InvalidInput``) or the model fails with no
        fallback configured (``BackendError``).
        """
        exp = self._exp
        if exp is None:
            return self._st.predict(features, request_id)  # one read: a swap cannot mix two versions
        return exp.predict(self._st, features, request_id)

    def predict_batch(self, rows: Any) -> PredictionBatch:
        """Predict many rows: a 2-D array, a list of dicts or rows, or a pandas DataFrame.

        Rows are validated together (the first bad row raises ``InvalidInput``); the model runs
        them in one call; when it fails, every row gets the fallback with the same reason, and
        ``PredictionBatch.sources`` and each row say where its answer came from. The prediction
        cache is not used for batches.
        """
        exp = self._exp
        if exp is None:
            return self._st.predict_batch(rows)
        return exp.predict_batch(self._st, rows)

    # -- events -----------------------------------------------------------------------------------
    def _flush_log(self) -> None:
        if self.services.plog is not None:
            self.services.plog.flush(self.feature_names, self._book.model_name)

    def subscribe(self, callback: Callback) -> None:
        """Call ``callback(kind, data)`` for ``drift_alert``, ``breaker_open``, ``breaker_closed``
        and ``model_error`` events, from the Runtime's background thread (never the predict path).
        A Runtime that started without its model reports that at once as a ``model_error``."""
        bg = self.services.bg
        bg.subscribers.append(callback)
        bg.start()
        st = self._st
        if st.model is None and st.load_error is not None:
            bg.submit(_call, callback, "model_error", {
                "model": self._book.model_name, "model_version": st.version,
                "reason": "model_not_loaded", "detail": str(st.load_error)[:300]})

    # -- introspection ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness (threads alive) and readiness (model loaded, smoke-tested, breaker not open)."""
        return health.health(self)

    def metrics(self) -> dict[str, Any]:
        """Counters (cumulative over every version served), latency percentiles of the version
        serving now, and component state, as a plain dict."""
        return health.metrics(self)

    def add_section(self, name: str, snapshot: Callable[[], dict[str, Any]], collector: Any = None) -> None:
        """Show another part's figures (pipelines) in ``metrics()`` under ``name`` and, through
        ``collector`` (an object with ``collect()`` yielding Prometheus families), in ``/metrics``."""
        self.sections[name] = snapshot
        if collector is not None:
            self.registry.register(collector)

    def cache_counts(self) -> dict[str, int]:
        c = self._st.cache
        hits, misses = self._retired_cache
        return {"cache_hits": hits + (c.hits if c is not None else 0),
                "cache_misses": misses + (c.misses if c is not None else 0)}

    def prometheus_text(self) -> bytes:
        """Prometheus text exposition of this Runtime's metrics (``model_prediction_*``)."""
        return self._book.prometheus_text()

    def drift(self) -> dict[str, Any]:
        """Drift scores of the recent window against the manifest's reference (psi, js, ks per
        feature and for the prediction), the method and threshold in force, and which drifted."""
        st = self._st
        mon = st.drift
        if mon is None:
            why = ("disabled by drift_enabled = false" if not self.options.drift_enabled
                   else "the manifest has no reference histograms" if st.model is not None
                   else "no model loaded")
            return {"enabled": False, "reason": why}
        st.drift_handoff()
        self.flush()
        return {"enabled": True, **mon.report()}

    def flush(self) -> None:
        """Process everything queued for the background thread now (drift chunks, log records)."""
        self.services.bg.drain()

    # -- lifecycle ------------------------------------------------------------------------------
    def swap(self, path: str | Path) -> LoadedModel | None:
        """Load, verify and smoke-test another artifact, then serve it; returns the old model.

        The new version is fully ready before the reference changes, so a call in flight
        finishes on the old one and the next call uses the new one, with its own empty cache,
        a closed breaker and fresh drift and latency windows. The caller closes the old model
        when it no longer needs it for rollback (None when the Runtime had started without its
        model).
        """
        new = LoadedModel.open(path, backend_options(self.options), self.options.backend)
        st = ServingVersion(self.services, new, new.manifest)
        with self._swap_lock:
            old = self._st
            old.drift_handoff()
            self._st = st
            self._book.serve(st.metrics)
            self._book.model_name = new.manifest.name
            self._artifact_path = Path(path)
            if old.cache is not None:
                self._retired_cache[0] += old.cache.hits
                self._retired_cache[1] += old.cache.misses
                old.cache.clear()
        return old.model

    # -- experiments ----------------------------------------------------------------------------
    @property
    def experiment(self) -> Experiment | None:
        return self._exp

    def start_experiment(self, path: str | Path, *, mode: str = "split", weight: float = 0.1,
                         key: str = "request_id", shadow_sample: float = 0.2) -> None:
        """Serve a candidate beside the model: a ``weight`` share of keys (``split``), or a
        ``shadow_sample`` share of requests scored off the answer path (``shadow``). The
        candidate is loaded, verified and smoke-tested first (``ModelLoadError``); an experiment
        already running is replaced. See ``edge_runtime.experiment``."""
        options = ExperimentOptions(mode=mode, weight=weight, key=key, shadow_sample=shadow_sample)
        model = LoadedModel.open(path, backend_options(self.options), self.options.backend)
        cand = ServingVersion(self.services, model, model.manifest)
        if self.feature_names and model.manifest.feature_names != self.feature_names:
            model.close()
            raise ModelLoadError(path, "the candidate's features differ from the model's "
                                 f"({', '.join(model.manifest.feature_names)} vs {', '.join(self.feature_names)}): "
                                 "an experiment compares two versions of one model")
        with self._swap_lock:
            old = self._exp
            self._exp = Experiment(cand, self._st, options)
            self._book.beside(cand.metrics, True)
            if self._variants_collector is None:
                self._variants_collector = VariantsCollector(self)
                self.registry.register(self._variants_collector)
            self.sections["variants"] = self._variants
        self._end(old)
        log.info("experiment started: %s %s version %s (%s)", mode, model.manifest.name, model.manifest.version,
                 f"weight {weight:g}, key {key}" if mode == "split" else f"shadow sample {shadow_sample:g}")

    def end_experiment(self) -> None:
        """Stop the experiment (if any) and unload its candidate; the model serves everything."""
        with self._swap_lock:
            old, self._exp = self._exp, None
            self.sections.pop("variants", None)
        self._end(old)

    def _end(self, exp: Experiment | None) -> None:
        if exp is None:
            return
        exp.close()
        self._book.beside(exp.candidate.metrics, False)
        if self._retired_candidate is not None:  # closed one experiment later: calls may still be in it
            self._retired_candidate.close()
        self._retired_candidate = exp.candidate
        log.info("experiment ended: candidate version %s unloaded", exp.candidate.version)

    def _variants(self) -> dict[str, Any]:
        exp = self._exp
        return exp.snapshot(self._st) if exp is not None else {}

    def close(self) -> None:
        self.closed = True
        self.end_experiment()
        if self._retired_candidate is not None:
            self._retired_candidate.close()
            self._retired_candidate = None
        svc = self.services
        if svc.batcher is not None:
            svc.batcher.close()
        if svc.deadline is not None:
            svc.deadline.close()
        svc.bg.close()
        self._st.close()
        svc.fallback.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(cb: Callback, kind: str, data: dict[str, Any]) -> None:
    try:
        cb(kind, data)
    except Exception:
        log.exception("event subscriber %r failed on %s", cb, kind)

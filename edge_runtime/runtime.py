"""The object a product calls: ``edge_runtime.load(...)`` returns a ``Runtime``."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import BackendOptions
from edge_runtime.errors import ConfigError
from edge_runtime.model import LoadedModel
from edge_runtime.prediction import Prediction

_now_ns = time.perf_counter_ns


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings of a Runtime; ``load(dir, **options)`` and the device config fill them."""

    backend: str = "auto"  # auto | onnx | tflite
    threads: int = 1
    latency_window: int = 2048  # predictions kept for latency percentiles

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> RuntimeOptions:
        known = cls.__dataclass_fields__
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)


class Runtime:
    """Serves predictions from one loaded model.

    >>> rt = edge_runtime.load("artifacts/iris")            # doctest: +SKIP
    >>> rt.predict({"sepal length (cm)": 5.1, ...}).value   # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel, options: RuntimeOptions) -> None:
        self._model = model
        self.options = options
        self._started = time.time()
        self._swap_lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=options.latency_window)
        self._counts = {"model": 0, "cache": 0, "fallback": 0, "invalid_input": 0, "error": 0}

    # -- serving --------------------------------------------------------------------------
    @property
    def manifest(self):  # type: ignore[no-untyped-def]
        return self._model.manifest

    @property
    def model_version(self) -> str:
        return self._model.version

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._model.manifest.feature_names

    def predict(self, features: Any, *, request_id: str | None = None) -> Prediction:
        """Predict one row: a dict of named features or a 1-D array in feature order."""
        t0 = _now_ns()
        model = self._model  # one read: a concurrent swap cannot mix two models in one call
        try:
            feeds = model.adapter.feeds_one(features)
        except Exception:
            self._counts["invalid_input"] += 1
            raise
        try:
            outs = model.backend.run(feeds)
            model.decoder.check(outs, 1)
        except Exception:
            self._counts["error"] += 1
            raise
        values, proba = model.decoder.decode(outs)
        ms = (_now_ns() - t0) / 1e6
        self._counts["model"] += 1
        self._latencies.append(ms)
        return Prediction(values[0], "model", model.manifest.version, ms,
                          None if proba is None else proba[0], model.decoder.classes,
                          request_id=request_id)

    def predict_batch(self, rows: Any) -> list[Prediction]:
        """Predict many rows: a 2-D array, a list of dicts or rows, or a pandas DataFrame."""
        t0 = _now_ns()
        model = self._model
        try:
            feeds, n = model.adapter.feeds_batch(rows)
        except Exception:
            self._counts["invalid_input"] += 1
            raise
        try:
            outs = model.backend.run(feeds)
            model.decoder.check(outs, n)
        except Exception:
            self._counts["error"] += n
            raise
        values, proba = model.decoder.decode(outs)
        ms = (_now_ns() - t0) / 1e6
        self._counts["model"] += n
        self._latencies.append(ms)
        version, classes = model.manifest.version, model.decoder.classes
        return [Prediction(v, "model", version, ms, None if proba is None else proba[i], classes)
                for i, v in enumerate(values)]

    # -- introspection --------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        m = self._model
        return {
            "live": True,
            "ready": m.smoke_ok or not m.manifest.smoke,
            "model": m.manifest.name,
            "model_version": m.manifest.version,
            "backend": m.manifest.backend,
            "smoke_test": "passed" if m.smoke_ok else ("none" if not m.manifest.smoke else "failed"),
            "uptime_s": round(time.time() - self._started, 3),
        }

    def metrics(self) -> dict[str, Any]:
        lat = np.fromiter(self._latencies, dtype=float)
        pct = (np.percentile(lat, [50, 95, 99]).round(4).tolist() if lat.size else [None] * 3)
        return {
            "model": self._model.manifest.name,
            "model_version": self._model.manifest.version,
            "predictions": dict(self._counts),
            "latency_ms": {"p50": pct[0], "p95": pct[1], "p99": pct[2], "window": int(lat.size)},
        }

    # -- lifecycle ------------------------------------------------------------------------
    def swap(self, path: str | Path) -> LoadedModel:
        """Load, verify and smoke-test another artifact, then serve it; returns the old model.

        The new model is fully ready before the reference changes, so a call in flight
        finishes on the old one and the next call uses the new one. The caller closes the
        old model when it no longer needs it for rollback.
        """
        new = LoadedModel.open(path, _backend_options(self.options), self.options.backend)
        with self._swap_lock:
            old, self._model = self._model, new
        return old

    def close(self) -> None:
        self._model.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _backend_options(options: RuntimeOptions) -> BackendOptions:
    return BackendOptions(threads=options.threads)


def load(path: str | Path | None = None, *, config: str | Path | None = None, **options: Any) -> Runtime:
    """Load an artifact directory and return a ready Runtime.

    Verifies the model file against the manifest, opens the backend, and runs the smoke
    test before returning. ``config=`` loads the model named by a device config instead.
    """
    if config is not None:
        from edge_runtime.config import load_config  # the device agent's config

        cfg = load_config(config)
        path = path or cfg.model.artifact
        options = {**cfg.runtime_options(), **options}
    if path is None:
        raise ConfigError("load() needs an artifact directory or config=")
    opts = RuntimeOptions.from_kwargs(**options)
    model = LoadedModel.open(path, _backend_options(opts), opts.backend)
    return Runtime(model, opts)

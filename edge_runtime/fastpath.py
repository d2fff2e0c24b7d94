"""The fused single-row predict path of one serving version, built once when the version is.

``ServingVersion.predict_general`` handles every case (any input shape, deadlines, micro-batching,
an open breaker, every failure). Most calls are none of that: one valid float row, a closed
breaker, a model that answers. For those this closure does the same work with every option
resolved when it was built, so a call pays only for what is switched on: the row is checked and
copied into a per-thread input buffer the backend has bound once (onnxruntime ``IOBinding``:
no output allocation per call), run, decoded into Python values (so the caller never holds a
buffer the next call reuses), counted, and handed to the cache, last-good store, drift window
and prediction log exactly as the general path does. Anything else goes to the general path,
before the model runs; a failure after it ran is handled by the general path's own code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.breaker import CLOSED
from edge_runtime.prediction import Prediction

if TYPE_CHECKING:
    from edge_runtime.serving import ServingVersion

PredictFn = Callable[..., Prediction]


def fuse(st: ServingVersion) -> PredictFn | None:
    """The fused path for ``st``, or None when every call must take the general path (no model,
    a non-tensor or non-float input, ``timeout_ms`` or micro-batching in force)."""
    svc = st.services
    model, adapter = st.model, st.adapter
    if model is None or adapter is None or not adapter.fast or svc.batcher is not None or svc.deadline is not None:
        return None
    backend = model.backend
    bind = getattr(backend, "bind_row", None)
    name, n, dtype = adapter.input_name, adapter.n, adapter.dtype
    local = threading.local()

    def new_slot() -> tuple[np.ndarray, Callable[[], list[np.ndarray]]]:
        got = bind() if bind is not None else None
        if got is None:  # the backend's ordinary run on a buffer of our own
            x = np.zeros((1, n), dtype=dtype)
            feeds, run = {name: x}, backend.run
            got = (x, lambda: run(feeds))
        local.slot = got
        return got

    row_values = adapter.row_values
    general = st.predict_general
    failed = st.failed_one
    answer = st._answer
    decode = model.decoder.one
    breaker = st.breaker
    cache, keyed = st.cache, st.keyed
    fallback = svc.fallback
    remember = fallback.remember if fallback.last_good is not None else None
    record = st.metrics.record
    k_model, k_cache = st.k_model, st.k_cache
    drift = st.drift is not None
    chunk = svc.options.drift_chunk
    plog = svc.plog
    version, classes = st.version, st.classes
    now = time.perf_counter_ns

    def predict(features: Any, request_id: str | None = None) -> Prediction:
        t0 = now()
        vals = row_values(features)
        if vals is None or breaker.state != CLOSED:
            return general(features, request_id)
        try:
            x, run = local.slot
        except AttributeError:
            x, run = new_slot()
        x[0] = vals
        key = None
        if keyed:
            key = x.tobytes()
            if cache is not None:
                hit = cache.get(key)
                if hit is not None:
                    return answer("cache", k_cache, hit[0], hit[1], None, t0, request_id, {name: x})
        try:
            outs = run()
        except Exception as exc:
            return failed(features, {name: x.copy()}, key, exc, None, t0, request_id)
        try:
            value, prow = decode(outs)
        except ValueError as exc:
            return failed(features, {name: x.copy()}, key, exc, outs, t0, request_id)
        breaker.success()
        if key is not None:
            if cache is not None:
                cache.put(key, (value, prow))
            if remember is not None:
                remember(key, value, prow, version)
        dt = now() - t0
        record(k_model, dt / 1e9)
        if drift:
            rows = st.drift_rows
            rows.append((key if key is not None else x.tobytes(), value))
            if len(rows) >= chunk:
                st.drift_handoff()
        if plog is not None and plog.sample():
            st._log("model", None, dt / 1e6, {name: x}, value, prow)  # the log copies the row
        return Prediction(value, "model", version, dt / 1e6, prow, classes, None, request_id)

    return predict

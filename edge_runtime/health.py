"""What a Runtime says about itself: ``health()``, ``metrics()`` and the Prometheus gauges."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edge_runtime.breaker import OPEN

if TYPE_CHECKING:  # typing only: runtime.py imports this module, never the other way at run time
    from edge_runtime.runtime import Runtime


def health(rt: Runtime) -> dict[str, Any]:
    """Liveness (threads alive) and readiness (model loaded, smoke-tested, breaker not open)."""
    st = rt.serving
    svc = rt.services
    m = st.model
    live_reasons = []
    if svc.bg.started and not svc.bg.alive and not rt.closed:
        live_reasons.append("background thread stopped")
    if svc.batcher is not None and not svc.batcher.alive and not rt.closed:
        live_reasons.append("micro-batching thread stopped")
    if rt.closed:
        live_reasons.append("runtime closed")
    reasons = []
    if m is None:
        reasons.append(f"model not loaded: {st.load_error}")
    if st.breaker.state == OPEN:
        reasons.append(f"circuit breaker open: {st.breaker.last_reason}")
    reasons.extend(live_reasons)
    smoke = "none" if m is None or not m.manifest.smoke else ("passed" if m.smoke_ok else "failed")
    if m is not None and m.manifest.smoke and not m.smoke_ok:
        reasons.append("smoke test not passed")
    out: dict[str, Any] = {
        "live": not live_reasons,
        "ready": not reasons,
        "reasons": reasons,
        "model": rt.model_name,
        "model_version": st.version,
        "loaded": m is not None,
        "backend": m.manifest.backend if m is not None else None,
        "smoke_test": smoke,
        "breaker": st.breaker.state,
        "fallback": svc.fallback.describe(),
        "uptime_s": round(time.time() - rt.started_at, 3),
    }
    if rt.fallback_error:
        out["fallback"]["error"] = rt.fallback_error
    return out


def metrics(rt: Runtime) -> dict[str, Any]:
    """Counters (cumulative over every version served), latency percentiles of the version
    serving now, and component state, as a plain dict."""
    book = rt.book
    counts, other, _, _ = book.totals()
    st = rt.serving
    svc = rt.services
    by_source = {"model": 0, "cache": 0, "fallback": 0, "invalid_input": 0, "error": 0}
    by_version: dict[str, dict[str, int]] = {}
    for (ver, source, outcome), n in counts.items():
        slot = source if source in ("model", "cache", "fallback") else outcome
        by_source[slot] = by_source.get(slot, 0) + n
        v = by_version.setdefault(ver, {})
        v[slot] = v.get(slot, 0) + n
    cache = rt.cache_counts()
    out: dict[str, Any] = {
        "model": rt.model_name,
        "model_version": st.version,
        "loaded": st.model is not None,
        "predictions": by_source,
        "by_version": by_version,
        "fallbacks": {k[9:]: n for k, n in sorted(other.items()) if k.startswith("fallback:")},
        "latency_ms": book.percentiles(),
        "breaker": st.breaker.snapshot(),
        "cache": {"enabled": st.cache is not None, "hits": cache["cache_hits"], "misses": cache["cache_misses"],
                  "size": len(st.cache) if st.cache is not None else 0, "max_size": rt.options.cache_size},
    }
    if svc.deadline is not None:
        out["deadline"] = svc.deadline.snapshot()
    if svc.batcher is not None:
        out["microbatch"] = svc.batcher.snapshot()
    if svc.plog is not None:
        out["prediction_log"] = {"path": str(svc.plog.path), "sample_every": svc.plog.every,
                                 "written": svc.plog.written, "dropped": svc.plog.dropped,
                                 "errors": svc.plog.errors}
    if st.drift is not None:
        rep = st.drift.report()
        out["drift"] = {"method": rep["method"], "window_rows": rep["window_rows"], "drifted": rep["drifted"],
                        "scores": {k: v[rep["method"]] for k, v in rep["features"].items()}}
    for name, snapshot in rt.sections.items():
        out[name] = snapshot()
    return out


def gauges(rt: Runtime) -> dict[str, Any]:
    """The state behind the Prometheus gauges: breaker, loaded, ready, log drops, drift."""
    st = rt.serving
    g: dict[str, Any] = {"breaker_state": st.breaker.state, "loaded": st.model is not None,
                         "version": st.version, "ready": health(rt)["ready"]}
    if rt.services.plog is not None:
        g["log_dropped"] = rt.services.plog.dropped
    if st.drift is not None:
        rep = st.drift.report()
        g["drift"] = dict(rep["features"])
        if rep["prediction"]:
            g["drift"]["__prediction__"] = rep["prediction"]
    return g

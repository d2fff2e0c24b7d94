"""Settings of a Runtime: ``load(dir, **options)`` and a device config's ``[runtime]`` table fill them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edge_runtime.backends import BackendOptions
from edge_runtime.drift import METHODS
from edge_runtime.errors import ConfigError


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


def backend_options(options: RuntimeOptions) -> BackendOptions:
    """How the backend opens a model file under these options."""
    return BackendOptions(threads=options.threads)

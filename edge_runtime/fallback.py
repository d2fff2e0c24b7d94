"""What answers when the model cannot: the fallback policy of one Runtime.

Tried in this order, first one that can answer wins:

1. ``fallback_last_good``: the last answer the model gave for exactly this validated input
   (bounded LRU of ``fallback_last_good_size`` entries, any model version);
2. ``fallback_artifact``: a second, usually tiny, artifact with the same features, loaded and
   smoke-tested beside the primary; it runs on the same input;
3. ``fallback_default``: a constant. A regression value (number, or list for several outputs),
   or a class label; or a dict ``{"value": ..., "probabilities": {class: p, ...}}``.

If none can answer the caller gets ``BackendError`` (or ``ModelLoadError`` at load when nothing
is configured). The answer's ``source`` is ``fallback`` and ``reason`` says why (see REASONS).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_runtime.cache import LRU
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.model import LoadedModel

log = logging.getLogger(__name__)

# Why a fallback answered (Prediction.reason, metrics label ``reason``).
REASONS = (
    "model_not_loaded",   # the primary artifact failed to load or its smoke test
    "backend_error",      # inference raised
    "non_finite_output",  # the model returned NaN or Inf
    "bad_output_shape",   # the model returned outputs of the wrong shape or count
    "timeout",            # inference overran timeout_ms
    "overloaded",         # every deadline worker is still busy with an overrunning call
    "breaker_open",       # the circuit breaker is open (or a probe is in flight)
)


class ConstantDefault:
    """A fixed answer, validated against the manifest when the Runtime starts."""

    def __init__(self, spec: Any, classes: tuple[Any, ...] | None) -> None:
        proba = None
        if isinstance(spec, dict):
            if "value" not in spec:
                raise ConfigError("fallback_default as a table needs a 'value' key "
                                  "(and optionally 'probabilities')", key="fallback_default")
            value, probs = spec["value"], spec.get("probabilities")
            if probs is not None:
                if not classes:
                    raise ConfigError("probabilities given for a model without classes", key="fallback_default")
                by_name = {str(k): float(v) for k, v in dict(probs).items()}
                unknown = sorted(set(by_name) - {str(c) for c in classes})
                if unknown:
                    raise ConfigError(f"unknown class(es) {', '.join(unknown)} in probabilities; classes are "
                                      f"{', '.join(map(str, classes))}", key="fallback_default")
                proba = np.array([by_name.get(str(c), 0.0) for c in classes], dtype=np.float32)
        else:
            value = spec
        if classes:
            match = [c for c in classes if c == value or str(c) == str(value)]
            if not match:
                raise ConfigError(f"default class {value!r} is not one of {', '.join(map(str, classes))}",
                                  key="fallback_default")
            value = match[0]
        elif isinstance(value, list):
            value = [float(v) for v in value]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        else:
            raise ConfigError(f"a regression default must be a number or a list of numbers, got "
                              f"{value!r}", key="fallback_default")
        self.value = value
        self.proba = proba


class FallbackPolicy:
    """The configured ways to answer without the primary model."""

    def __init__(self, *, default: ConstantDefault | None = None, last_good_size: int = 0,
                 secondary: LoadedModel | None = None) -> None:
        self.default = default
        self.last_good = LRU(last_good_size) if last_good_size > 0 else None
        self.secondary = secondary

    @property
    def configured(self) -> bool:
        return self.default is not None or self.last_good is not None or self.secondary is not None

    def describe(self) -> dict[str, Any]:
        return {
            "last_good": self.last_good is not None,
            "artifact": None if self.secondary is None else
            f"{self.secondary.manifest.name} {self.secondary.manifest.version}",
            "default": None if self.default is None else self.default.value,
        }

    def remember(self, key: bytes, value: Any, proba: np.ndarray | list[float] | None, version: str) -> None:
        if self.last_good is not None:
            self.last_good.put(key, (value, proba, version))

    def answer_one(self, features: Any, key: bytes | None) -> tuple[Any, np.ndarray | None, str | None] | None:
        """(value, probability row, answering version) or None when nothing can answer."""
        if self.last_good is not None and key is not None:
            hit = self.last_good.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        if self.secondary is not None:
            got = self._secondary(features, batch=False)
            if got is not None:
                values, proba = got
                return values[0], None if proba is None else proba[0], self.secondary.version
        if self.default is not None:
            return self.default.value, self.default.proba, None
        return None

    def answer_batch(self, rows: Any, keys: list[bytes] | None, n: int
                     ) -> list[tuple[Any, np.ndarray | None, str | None]] | None:
        if self.secondary is not None:
            got = self._secondary(rows, batch=True)
            if got is not None:
                values, proba = got
                v = self.secondary.version
                return [(values[i], None if proba is None else proba[i], v) for i in range(n)]
        out = []
        for i in range(n):
            hit = None
            if self.last_good is not None and keys is not None:
                hit = self.last_good.get(keys[i])
            if hit is None:
                if self.default is None:
                    return None
                hit = (self.default.value, self.default.proba, None)
            out.append(hit)
        return out

    def _secondary(self, features: Any, *, batch: bool) -> tuple[list[Any], np.ndarray | None] | None:
        m = self.secondary
        assert m is not None
        try:
            if batch:
                feeds, n = m.adapter.feeds_batch(features)
            else:
                feeds, n = m.adapter.feeds_one(features), 1
            outs = m.backend.run(feeds)
            m.decoder.check(outs, n)
            return m.decoder.decode(outs)
        except (EdgeRuntimeError, ValueError) as exc:
            log.warning("fallback artifact %s failed too: %s", m.manifest.name, exc)
            return None

    def close(self) -> None:
        if self.secondary is not None:
            self.secondary.close()

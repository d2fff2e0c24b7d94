"""A backend with no library behind it, for tests and fault injection.

Its "model file" is one line of JSON: ``{"weights": [[...]], "bias": [...], "input": "x",
"outputs": ["value"], "softmax": false}`` computes ``x @ W + b``; anything after the first
line is ignored (a large padded file stands in for a large model in update benchmarks). Faults are set on the
instance (``fail``, ``delay_s``, ``nan``, ``wrong_shape``) so a test can break a loaded
model through the public API and watch what the runtime does; ``"delay_s"`` and
``"fail_after"`` (calls that succeed before every call fails) in the file make a model
that is bad from the start, as a bad update would be.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge_runtime.backends import register
from edge_runtime.backends.base import BackendOptions
from edge_runtime.errors import BackendError, ModelLoadError
from edge_runtime.manifest import TensorSpec


class FakeBackend:
    name = "fake"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                spec = json.loads(f.readline())
            self.weights = np.asarray(spec["weights"], dtype=np.float32)
            self.bias = np.asarray(spec.get("bias", [0.0] * self.weights.shape[1]), dtype=np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(path, f"fake model file is unreadable: {exc}") from exc
        self.input = spec.get("input", "input")
        self.output_names = spec.get("outputs", ["value"])
        self.softmax = bool(spec.get("softmax", False))
        self.fail: Exception | None = None
        self.fail_after: int | None = spec.get("fail_after")
        self.delay_s = float(spec.get("delay_s", 0.0))
        self.nan = False
        self.wrong_shape = False
        self.calls = 0

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(self.input, "float32", (None, self.weights.shape[0]))]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(n, "float32", (None, self.weights.shape[1])) for n in self.output_names]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise BackendError(self.name, str(self.fail))
        if self.fail_after is not None and self.calls > self.fail_after:
            raise BackendError(self.name, f"failing after {self.fail_after} calls (as its file says)")
        y = feeds[self.input] @ self.weights + self.bias
        if self.softmax:
            e = np.exp(y - y.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        if self.nan:
            y = np.full_like(y, np.nan)
        if self.wrong_shape:
            y = y[:, :0]
        return [y.astype(np.float32) for _ in self.output_names]

    def close(self) -> None:
        pass


register("fake", FakeBackend)

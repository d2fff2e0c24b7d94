"""ONNX Runtime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.backends import register
from edge_runtime.backends.base import BackendOptions
from edge_runtime.errors import BackendError, ModelLoadError
from edge_runtime.manifest import TensorSpec

# ONNX Runtime's type strings -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(string)": "str",
}


def _spec(arg) -> TensorSpec:  # type: ignore[no-untyped-def]
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorSpec(name=arg.name, dtype=_ORT_TYPES.get(arg.type, arg.type), shape=shape)


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise ModelLoadError(path, "onnxruntime is not installed",
                                 hint="pip install onnxruntime") from exc
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(0, options.threads)
        so.inter_op_num_threads = max(0, options.inter_op_threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if options.optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(path, f"onnxruntime cannot open the model: {exc}".splitlines()[0],
                                 hint="The file may be damaged or need a newer onnxruntime.") from exc
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        # one RunOptions reused for every call: passing None makes onnxruntime build one per call
        self._run_options = ort.RunOptions()
        self._run = self._session.run

    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._run(self._output_names, feeds, self._run_options)  # type: ignore[no-any-return]
        except Exception as exc:
            raise BackendError(self.name, str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
        self._run = None  # type: ignore[assignment]


register("onnx", OnnxBackend)

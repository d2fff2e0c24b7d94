"""ONNX Runtime backend."""

from __future__ import annotations

from collections.abc import Callable
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


_NUMERIC = {"float32", "float64", "float16", "int64", "int32", "int8", "uint8"}


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
        # run_with_iobinding looks up this entry on every call, and an unset entry costs a raised
        # and caught RuntimeError (~80 us on onnxruntime 1.32); -1 says "no WebGPU graph capture"
        self._run_options.add_run_config_entry("gpu_graph_id", "-1")
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

    def bind_row(self) -> tuple[np.ndarray, Callable[[], list[np.ndarray]]] | None:
        """For the calling thread: a (1, n) input buffer and a call that runs the model on it into
        output buffers bound once (``IOBinding``), which saves onnxruntime allocating the outputs
        on every call. None when that cannot apply: more than one input, or an output that is not
        a numeric tensor with a fixed size per row (a ZipMap's list of dicts, a dynamic axis)."""
        if len(self._inputs) != 1 or self._session is None:
            return None
        spec = self._inputs[0]
        if len(spec.shape) != 2 or spec.shape[1] is None or spec.dtype not in _NUMERIC:
            return None
        outs = []
        for o in self._outputs:
            if o.dtype not in _NUMERIC or not o.shape or any(d is None for d in o.shape[1:]):
                return None
            outs.append(np.zeros((1, *(int(d or 0) for d in o.shape[1:])), dtype=o.dtype))
        x = np.zeros((1, spec.shape[1]), dtype=spec.dtype)
        binding = self._session.io_binding()
        binding.bind_cpu_input(spec.name, x)
        for o, buf in zip(self._outputs, outs, strict=True):
            binding.bind_output(o.name, "cpu", element_type=buf.dtype, shape=buf.shape, buffer_ptr=buf.ctypes.data)
        run, ro, name = self._session.run_with_iobinding, self._run_options, self.name

        def run_row() -> list[np.ndarray]:
            try:
                run(binding, ro)
            except Exception as exc:
                raise BackendError(name, str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
            return outs

        run_row.keep = (binding, x, outs)  # type: ignore[attr-defined]  # the buffers live as long as the call
        try:  # a model whose outputs are not the shapes it declares would fail every bound call
            plain = self._run(self._output_names, {spec.name: x}, ro)
            bound = run_row()
        except Exception:
            return None
        if [getattr(a, "shape", None) for a in plain] != [b.shape for b in bound]:
            return None
        return x, run_row

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
        self._run = None  # type: ignore[assignment]


register("onnx", OnnxBackend)

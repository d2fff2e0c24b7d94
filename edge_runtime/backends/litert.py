"""LiteRT backend for ``.tflite`` files: ``ai_edge_litert`` first, ``tflite_runtime`` as a fallback.

Callers pass and receive floats: for an int8/uint8 input or output the backend applies the
tensor's scale and zero point, so a full-integer model is a drop-in for its float twin.

A TFLite interpreter holds one shape at a time and is not thread-safe. The backend keeps one
interpreter at batch size 1 (the ``predict`` path, never resized) and creates a second one the
first time a batch of another size arrives; that one is resized only when the size changes.
Each has its own lock.

``ai-edge-litert`` is the ``[tflite]`` extra. ``tflite-runtime`` (last release 2.14, 2023) is
only tried when LiteRT is missing: it does not run under numpy 2 and cannot load models whose
op versions are newer than it (dynamic-range int8 from current converters, for one).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import register
from edge_runtime.backends.base import BackendOptions
from edge_runtime.errors import BackendError, ModelLoadError
from edge_runtime.manifest import MANIFEST_FILE, TensorSpec

log = logging.getLogger(__name__)

EXTRA_HINT = ("Install LiteRT on this device: pip install 'edge-runtime[tflite]' (the ai-edge-litert "
              "package; wheels exist for x86_64 and aarch64, none for 32-bit armv7l), or convert the "
              "model with --format onnx.")
_QUANTIZED = (np.int8, np.uint8, np.int16)


def _import_interpreter(path: Path) -> tuple[type, str]:
    """The Interpreter class and the name of the library providing it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        log.info("ai_edge_litert is not installed; using tflite_runtime")
        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelLoadError(path, "this is a TFLite artifact and neither ai-edge-litert nor tflite-runtime "
                             "is installed", hint=EXTRA_HINT) from None


def _manifest_requires(model_path: Path) -> str:
    """What the artifact's manifest says it needs, for error messages (best effort)."""
    try:
        requires = json.loads((model_path.parent / MANIFEST_FILE).read_text()).get("requires") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(requires, dict) or not requires:
        return ""
    return " (its manifest requires " + ", ".join(f"{k}{v}" for k, v in sorted(requires.items())) + ")"


def load_error(path: Path, library: str, exc: BaseException) -> ModelLoadError:
    """Translate an interpreter's load failure into a ModelLoadError that says what to do."""
    text = (str(exc).strip().splitlines() or [repr(exc)])[0]
    if "Didn't find op for builtin opcode" in str(exc) or "Registration failed" in str(exc):
        op = text
        for line in str(exc).splitlines():
            if "Didn't find op" in line:
                op = line.strip()
                break
        return ModelLoadError(
            path, f"{library} is too old for this model: {op}",
            hint=f"The model uses an op version newer than {library} knows{_manifest_requires(path)}; "
            "tflite-runtime 2.14 cannot load models from current converters (dynamic-range int8 in "
            "particular). Install ai-edge-litert (pip install 'edge-runtime[tflite]'), or convert with "
            "--quantize none/static/fp16 or --format onnx.")
    if library == "tflite-runtime" and isinstance(exc, SystemError) and np.__version__.startswith("2"):
        return ModelLoadError(
            path, f"tflite-runtime does not work with numpy {np.__version__} ({text})",
            hint="Install ai-edge-litert (pip install 'edge-runtime[tflite]'), or numpy<2 for tflite-runtime.")
    return ModelLoadError(path, f"{library} cannot open the model: {text}",
                          hint="The file may be damaged, not a TFLite model, or need a newer LiteRT.")


class _Quant:
    """Float <-> integer mapping of one quantized tensor: real = scale * (q - zero_point)."""

    __slots__ = ("dtype", "hi", "inv_scale", "lo", "scale", "table", "zero_point")

    def __init__(self, dtype: Any, scale: float, zero_point: int) -> None:
        info = np.iinfo(dtype)
        self.dtype = np.dtype(dtype)
        self.scale = np.float32(scale)
        self.inv_scale = np.float32(1.0 / scale)
        self.zero_point = np.float32(zero_point)
        self.lo, self.hi = np.float32(info.min), np.float32(info.max)
        # 8-bit outputs dequantize through a 256-entry table: one numpy call instead of three.
        self.table: np.ndarray | None = None
        if self.dtype.itemsize == 1:
            codes = np.arange(256, dtype=np.uint8).view(self.dtype).astype(np.float32)
            self.table = (codes - self.zero_point) * self.scale

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = x * self.inv_scale
        q += self.zero_point
        np.rint(q, out=q)
        np.maximum(q, self.lo, out=q)  # np.clip is several times slower on tiny arrays
        np.minimum(q, self.hi, out=q)
        return q.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return self.table.take(q.view(np.uint8))
        return (q.astype(np.float32) - self.zero_point) * self.scale


def _quant_of(detail: dict[str, Any]) -> _Quant | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if detail["dtype"] in _QUANTIZED and scale:
        return _Quant(detail["dtype"], float(scale), int(zero_point))
    return None


class _Slot:
    """One interpreter, its bound methods and lock, set to one batch size."""

    __slots__ = ("batch", "get", "interp", "invoke", "lock", "set")

    def __init__(self, interp: Any, batch: int, *, native: bool) -> None:
        self.interp = interp
        self.batch = batch
        self.lock = threading.Lock()
        # The public methods wrap the native ones with a Python frame each, and invoke() adds a
        # refcount check that guards tensor() views, which this backend never creates. Calling
        # the native wrapper saves ~1 µs of a ~3 µs single-row call; fall back to the public
        # API if a LiteRT release renames it. Holding the native methods defeats that check, so
        # only a slot that is never resized (``native=True``) uses them.
        wrapper = getattr(interp, "_interpreter", None) if native else None
        if wrapper is not None and all(hasattr(wrapper, a) for a in ("SetTensor", "GetTensor", "Invoke")):
            self.set = wrapper.SetTensor
            self.get = wrapper.GetTensor
            self.invoke = wrapper.Invoke
        else:
            self.set = interp.set_tensor
            self.get = interp.get_tensor
            self.invoke = interp.invoke


class LiteRTBackend:
    name = "tflite"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        self._cls, self.library = _import_interpreter(path)
        self._path = path
        # threads 0 = let LiteRT choose
        self._threads = options.threads if options.threads > 0 else None
        try:
            self._content = Path(path).read_bytes()
        except OSError as exc:
            raise ModelLoadError(path, f"cannot read the model file: {exc.strerror}") from exc
        interp = self._new_interpreter()
        names_in, names_out = self._signature_names(interp)
        in_details, out_details = interp.get_input_details(), interp.get_output_details()
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]
        self._in_q = [_quant_of(d) for d in in_details]
        self._out_q = [_quant_of(d) for d in out_details]
        self._inputs = [self._spec(d, names_in.get(d["index"], d["name"]), q)
                        for d, q in zip(in_details, self._in_q, strict=True)]
        self._outputs = [self._spec(d, names_out.get(d["index"], d["name"]), q)
                         for d, q in zip(out_details, self._out_q, strict=True)]
        self._in_names = [s.name for s in self._inputs]
        self._in_tails = [[int(v) for v in d["shape"][1:]] for d in in_details]
        self._in_dtypes = [np.dtype(np.float32) if q else np.dtype(d["dtype"])
                           for d, q in zip(in_details, self._in_q, strict=True)]
        self._batch_dynamic = all(len(d["shape_signature"]) and d["shape_signature"][0] in (-1, 1)
                                  for d in in_details)
        # The predict path: batch 1, never resized. If the model was saved with another batch
        # size, resize once here.
        first = int(in_details[0]["shape"][0]) if len(in_details[0]["shape"]) else 1
        if first != 1:
            self._resize(interp, 1)
        self._one = _Slot(interp, 1, native=True)
        self._many: _Slot | None = None
        self._many_lock = threading.Lock()
        self.run = self._build_run()  # type: ignore[method-assign,assignment]

    # -- loading --------------------------------------------------------------------------
    def _new_interpreter(self) -> Any:
        try:
            interp = self._cls(model_content=self._content, num_threads=self._threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError, SystemError) as exc:
            raise load_error(self._path, self.library, exc) from exc
        return interp

    @staticmethod
    def _signature_names(interp: Any) -> tuple[dict[int, str], dict[int, str]]:
        """Tensor index -> signature name (e.g. ``output_0``), stabler than graph tensor names."""
        try:
            sigs = interp.get_signature_list()
            if len(sigs) != 1:
                return {}, {}
            runner = interp.get_signature_runner(next(iter(sigs)))
            ins = {d["index"]: n for n, d in runner.get_input_details().items()}
            outs = {d["index"]: n for n, d in runner.get_output_details().items()}
            return ins, outs
        except (ValueError, RuntimeError, AttributeError, KeyError):
            return {}, {}

    @staticmethod
    def _spec(detail: dict[str, Any], name: str, q: _Quant | None) -> TensorSpec:
        sig = detail.get("shape_signature")
        if sig is None or not len(sig):
            sig = detail["shape"]
        shape = tuple(None if int(s) < 0 else int(s) for s in sig)
        if shape:
            shape = (None, *shape[1:])  # the batch dimension is always resizable here
        dtype = "float32" if q is not None else np.dtype(detail["dtype"]).name
        return TensorSpec(name=name, dtype=dtype, shape=shape)

    def _resize(self, interp: Any, n: int) -> None:
        for idx, tail in zip(self._in_idx, self._in_tails, strict=True):
            interp.resize_tensor_input(idx, [n, *tail], strict=False)
        interp.allocate_tensors()

    # -- running --------------------------------------------------------------------------
    def _build_run(self) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
        """A run function specialised for this model's inputs and outputs.

        The common case (one float input, float outputs) skips every per-call loop that does
        not apply; that path is on every ``predict``.
        """
        if len(self._in_idx) != 1:
            return self._run_general
        if self._in_q[0] is not None or any(q is not None for q in self._out_q):
            return self._build_run_quantized()
        one = self._one
        in_name, in_idx = self._in_names[0], self._in_idx[0]
        lock, set_tensor, invoke, get_tensor = one.lock, one.set, one.invoke, one.get
        general = self._run_general

        # A batch of another size or a wrong dtype makes set_tensor raise ValueError before
        # anything runs; the general path then resizes or converts, or reports the error.
        if len(self._out_idx) == 1:
            out0 = self._out_idx[0]

            def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                with lock:
                    try:
                        set_tensor(in_idx, feeds[in_name])
                    except (ValueError, KeyError):
                        pass
                    else:
                        try:
                            invoke()
                            return [get_tensor(out0)]
                        except (ValueError, RuntimeError) as exc:
                            raise BackendError("tflite", _first_line(exc)) from exc
                return general(feeds)

            return run

        out_idx = tuple(self._out_idx)

        def run_multi(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with lock:
                try:
                    set_tensor(in_idx, feeds[in_name])
                except (ValueError, KeyError):
                    pass
                else:
                    try:
                        invoke()
                        return [get_tensor(i) for i in out_idx]
                    except (ValueError, RuntimeError) as exc:
                        raise BackendError("tflite", _first_line(exc)) from exc
            return general(feeds)

        return run_multi

    def _build_run_quantized(self) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
        """One input, integer input and/or outputs: quantize, run, dequantize, no loops."""
        one = self._one
        in_name, in_idx, dtype = self._in_names[0], self._in_idx[0], self._in_dtypes[0]
        quantize = self._in_q[0].quantize if self._in_q[0] is not None else None
        outs = tuple((i, q.dequantize if q is not None else None)
                     for i, q in zip(self._out_idx, self._out_q, strict=True))
        lock, set_tensor, invoke, get_tensor = one.lock, one.set, one.invoke, one.get
        general = self._run_general

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            x = feeds.get(in_name)
            if x is None or x.shape[0] != 1 or x.dtype != dtype:
                return general(feeds)
            if quantize is not None:
                x = quantize(x)
            try:
                with lock:
                    set_tensor(in_idx, x)
                    invoke()
                    got = [(get_tensor(i), dq) for i, dq in outs]
            except (ValueError, RuntimeError) as exc:
                raise BackendError("tflite", _first_line(exc)) from exc
            return [o if dq is None else dq(o) for o, dq in got]

        return run

    def bind_row(self) -> tuple[np.ndarray, Callable[[], list[np.ndarray]]] | None:
        """For the fused predict path: a (1, n) float buffer and a call that runs the batch-1
        interpreter on it (quantizing and dequantizing int8 tensors as ``run`` does), with no
        per-call lookups. None for a model with several inputs or a non-2-D input."""
        if len(self._in_idx) != 1 or len(self._in_tails[0]) != 1:
            return None
        x = np.zeros((1, self._in_tails[0][0]), dtype=self._in_dtypes[0])
        one = self._one
        lock, set_tensor, invoke, get_tensor = one.lock, one.set, one.invoke, one.get
        in_idx = self._in_idx[0]
        quantize = self._in_q[0].quantize if self._in_q[0] is not None else None
        out_idx = tuple(self._out_idx)
        dequant = tuple(q.dequantize if q is not None else None for q in self._out_q)
        plain = all(d is None for d in dequant)

        def run_row() -> list[np.ndarray]:
            try:
                with lock:
                    set_tensor(in_idx, x if quantize is None else quantize(x))
                    invoke()
                    got = [get_tensor(i) for i in out_idx]
            except (ValueError, RuntimeError) as exc:
                raise BackendError("tflite", _first_line(exc)) from exc
            return got if plain else [o if dq is None else dq(o) for o, dq in zip(got, dequant, strict=True)]

        return x, run_row

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # replaced per instance
        return self._run_general(feeds)

    def _run_general(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            xs = [feeds[n] for n in self._in_names]
        except KeyError as exc:
            raise BackendError(self.name, f"missing input {exc.args[0]!r}; the model takes "
                               f"{', '.join(self._in_names)}") from None
        prepared = []
        for x, q, dtype in zip(xs, self._in_q, self._in_dtypes, strict=True):
            x = np.asarray(x)
            if x.dtype != dtype:
                x = x.astype(dtype)
            prepared.append(q.quantize(x) if q is not None else np.ascontiguousarray(x))
        n = int(prepared[0].shape[0]) if prepared[0].ndim else 1
        if n == 0:
            raise BackendError(self.name, "empty batch")
        if n == 1:
            return self._invoke(self._one, prepared)
        if not self._batch_dynamic:
            return self._run_rows(prepared, n)
        slot = self._batch_slot()
        with slot.lock:
            if slot.batch != n:
                try:
                    self._resize(slot.interp, n)
                except (ValueError, RuntimeError) as exc:
                    raise BackendError(self.name, f"cannot resize the batch to {n}: {_first_line(exc)}") from exc
                slot.batch = n
            return self._invoke_locked(slot, prepared)

    def _run_rows(self, prepared: list[np.ndarray], n: int) -> list[np.ndarray]:
        """A model whose batch dimension is fixed: one invoke per row."""
        rows = [self._invoke(self._one, [x[i:i + 1] for x in prepared]) for i in range(n)]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(self._out_idx))]

    def _batch_slot(self) -> _Slot:
        if self._many is None:
            with self._many_lock:
                if self._many is None:
                    interp = self._new_interpreter()
                    first = self._one.interp.get_input_details()[0]["shape"]
                    self._many = _Slot(interp, int(first[0]) if len(first) else 1, native=False)
                    self._many.batch = -1  # force a resize on first use
        return self._many

    def _invoke(self, slot: _Slot, xs: list[np.ndarray]) -> list[np.ndarray]:
        with slot.lock:
            return self._invoke_locked(slot, xs)

    def _invoke_locked(self, slot: _Slot, xs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            for idx, x in zip(self._in_idx, xs, strict=True):
                slot.set(idx, x)
            slot.invoke()
            outs = [slot.get(i) for i in self._out_idx]
        except (ValueError, RuntimeError) as exc:
            raise BackendError(self.name, _first_line(exc)) from exc
        return [q.dequantize(o) if q is not None else o for o, q in zip(outs, self._out_q, strict=True)]

    # -- description ----------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def close(self) -> None:
        self._one = None  # type: ignore[assignment]
        self._many = None
        self.run = _closed  # type: ignore[method-assign,assignment]


def _closed(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    raise BackendError("tflite", "the model was closed")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else repr(exc)


register("tflite", LiteRTBackend)

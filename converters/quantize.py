"""Quantization modes per target format, and how ``auto`` picks among them.

Each quantizer writes one candidate model file and raises ``NotApplicable`` (with a reason a
user can read) when the mode cannot help this model. ONNX quantizers run in a child process
under a time limit: onnxconverter-common's float16 pass has looped for 10+ minutes on
skl2onnx graphs, and a kill is the only reliable stop.

This module registers the ONNX quantizers; ``converters/tflite_quantize.py`` the TFLite ones,
both in the registry of ``converters/quantizers.py``.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.quantizers import (  # noqa: F401  (re-exported: the registry's names, as before)
    DEFAULT_TIMEOUT_S,
    MODES,
    NotApplicable,
    QuantContext,
    Quantizer,
    modes_for,
    quantizer,
    register_quantizer,
)
from edge_runtime.errors import ConversionError

log = logging.getLogger(__name__)

# ai.onnx operators onnxruntime's int8 quantizers handle and that carry weights worth shrinking
INT8_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "LSTM", "GRU", "Attention")
# ops float16 helps with (anything in the ai.onnx domain that does float math on weights)
FP16_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Mul")
SLOWER_TOLERANCE = 0.10  # p50 within 10% of fp32's counts as "not slower" (timer noise)


# -- ONNX ---------------------------------------------------------------------------------
def _graph_ops(path: Path) -> list[tuple[str, str]]:
    import onnx

    model = onnx.load(str(path))
    return [(n.domain or "ai.onnx", n.op_type) for n in model.graph.node]


def _int8_ops(ctx: QuantContext) -> list[str]:
    if ctx.model.tree_ensemble:
        raise NotApplicable("tree ensembles are never int8-quantized: int8 thresholds would move the "
                            "splits and change predictions")
    ops = _graph_ops(ctx.fp32)
    found = sorted({op for dom, op in ops if dom == "ai.onnx" and op in INT8_OPS})
    if not found:
        ml = sorted({op for dom, op in ops if dom == "ai.onnx.ml"})
        raise NotApplicable("nothing int8 can take: the model's weights sit in "
                            + (", ".join(ml) if ml else "no quantizable") + " operators"
                            + (" (ai.onnx.ml), which onnxruntime does not quantize" if ml else ""))
    return found


def _run_worker(job: dict[str, Any], timeout_s: float, workdir: Path) -> dict[str, Any]:
    job_file = workdir / "job.pkl"
    job_file.write_bytes(pickle.dumps(job))
    try:
        # -c, not -m: run as __main__ this module would register its quantizers a second time
        proc = subprocess.run([sys.executable, "-c", "import sys; from converters.quantize import main; "
                               "raise SystemExit(main(sys.argv[1:]))", str(job_file)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"timed out after {timeout_s:.0f} s (killed)") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ConversionError(f"quantizer crashed: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    if not result.get("ok"):
        raise ConversionError(str(result.get("reason")))
    return result


def _onnx_job(ctx: QuantContext, out_dir: Path, mode: str, **params: Any) -> Path:
    out = out_dir / "model.onnx"
    job = {"mode": mode, "src": str(ctx.fp32), "dst": str(out), "feeds": ctx.calibration[:1], **params}
    result = _run_worker(job, ctx.timeout_s, out_dir)
    ctx.notes.extend(result.get("notes", []))
    return out


def onnx_none(ctx: QuantContext, out_dir: Path) -> Path:
    out = out_dir / "model.onnx"
    out.write_bytes(ctx.fp32.read_bytes())
    return out


def onnx_dynamic(ctx: QuantContext, out_dir: Path) -> Path:
    # QUInt8 weights kept agreement where QInt8 lost 2.6% on iris (FACTS.md)
    return _onnx_job(ctx, out_dir, "dynamic", ops=_int8_ops(ctx))


def onnx_static(ctx: QuantContext, out_dir: Path) -> Path:
    ops = _int8_ops(ctx)
    if not ctx.calibration:
        raise NotApplicable("static quantization needs calibration rows: pass --calibration-data FILE")
    out = out_dir / "model.onnx"
    job = {"mode": "static", "src": str(ctx.fp32), "dst": str(out), "feeds": ctx.calibration, "ops": ops}
    result = _run_worker(job, ctx.timeout_s, out_dir)
    ctx.notes.extend(result.get("notes", []))
    return out


def onnx_fp16(ctx: QuantContext, out_dir: Path) -> Path:
    if ctx.model.tree_ensemble:
        raise NotApplicable("tree ensembles keep float32: their ai.onnx.ml operators have no float16 form")
    ops = _graph_ops(ctx.fp32)
    if not any(dom == "ai.onnx" and op in FP16_OPS for dom, op in ops):
        raise NotApplicable("nothing float16 can take: the model's math sits in ai.onnx.ml operators ("
                            + ", ".join(sorted({op for dom, op in ops if dom == "ai.onnx.ml"})) + ")")
    return _onnx_job(ctx, out_dir, "fp16")


register_quantizer("onnx", "none", onnx_none)
register_quantizer("onnx", "dynamic", onnx_dynamic)
register_quantizer("onnx", "static", onnx_static)
register_quantizer("onnx", "fp16", onnx_fp16)


# -- auto ---------------------------------------------------------------------------------
@dataclass
class Candidate:
    mode: str
    size_bytes: int | None = None
    p50_ms: float | None = None
    mean_ms: float | None = None
    agreement: float | None = None
    drop: float | None = None
    max_abs_diff: float | None = None
    kept: bool = False
    chosen: bool = False
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    path: Path | None = None  # candidate artifact directory (not recorded)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "path"}
        for k in ("p50_ms", "mean_ms"):
            if d[k] is not None:
                d[k] = round(d[k], 5)
        return d


def select(candidates: list[Candidate], max_drop: float) -> Candidate:
    """Keep the smallest candidate within ``max_drop`` and not slower than fp32; fill reasons."""
    base = next((c for c in candidates if c.mode == "none"), None)
    if base is None or base.size_bytes is None or base.p50_ms is None:
        raise ConversionError("auto needs the full-precision candidate and it failed: "
                              + (base.reason if base else "missing"))
    limit = base.p50_ms * (1 + SLOWER_TOLERANCE)
    ok = []
    for c in candidates:
        if c.size_bytes is None or c.drop is None or c.p50_ms is None:
            continue  # reason already says why it was not built or measured
        if c.drop > max_drop:
            c.reason = f"accuracy drop {c.drop:.4f} > {max_drop:g}"
        elif c.mode != "none" and c.p50_ms > limit:
            c.reason = (f"slower than fp32: p50 {c.p50_ms * 1000:.1f} µs vs {base.p50_ms * 1000:.1f} µs "
                        f"({(c.p50_ms / base.p50_ms - 1) * 100:+.0f}%)")
        else:
            c.kept = True
            ok.append(c)
    if not ok:
        raise ConversionError("no candidate passed: " + "; ".join(f"{c.mode}: {c.reason}" for c in candidates))
    # smallest wins; on equal size prefer fp32 (no accuracy risk)
    best = min(ok, key=lambda c: (c.size_bytes or 0, c.mode != "none"))
    best.chosen = True
    assert best.size_bytes is not None and best.drop is not None and best.p50_ms is not None
    best.reason = (f"chosen: smallest passing, {best.size_bytes:,} bytes = "
                   f"{best.size_bytes / base.size_bytes:.2f}x fp32, drop {best.drop:.4f}, "
                   f"p50 {best.p50_ms * 1000:.1f} µs")
    for c in ok:
        if c is not best:
            c.reason = f"passed, but {c.size_bytes:,} bytes is larger than {best.mode}'s {best.size_bytes:,}"
    return best


# -- child process ------------------------------------------------------------------------
def _check_runs(path: str, feeds: list[dict[str, np.ndarray]]) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for f in feeds[:1]:
        sess.run(None, f)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _fix_fp16_casts(model: Any) -> int:
    """After onnxconverter-common's float16 pass, point Cast nodes at the type the pass gave
    their output. skl2onnx graphs hold Cast(... -> float) nodes before the first MatMul; the
    pass records their outputs as float16 but leaves ``to=FLOAT``, and the model fails to load
    ("Type parameter (T) of Optype (MatMul) bound to different types")."""
    import onnx

    half = onnx.TensorProto.FLOAT16
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    half_inits = {t.name for t in model.graph.initializer if t.data_type == half}
    feeds_half = {i for n in model.graph.node if any(x in half_inits for x in n.input) for i in n.input}
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or not (declared.get(node.output[0]) == half or node.output[0] in feeds_half):
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16
                fixed += 1
    return fixed


def _drop_input_casts(model: Any) -> int:
    """Remove Cast nodes that cast a graph input to the type it already has (skl2onnx starts
    graphs with Cast(float -> float)). Left in, onnxconverter-common's cast clean-up wires the
    first MatMul straight to the float32 input next to float16 weights."""
    inputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    dropped = 0
    for node in list(model.graph.node):
        if node.op_type != "Cast" or node.input[0] not in inputs or node.output[0] in outputs:
            continue
        if next((a.i for a in node.attribute if a.name == "to"), None) != inputs[node.input[0]]:
            continue
        model.graph.node.remove(node)
        for other in model.graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = node.input[0]
        dropped += 1
    return dropped


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    mode, src, dst, feeds = job["mode"], job["src"], job["dst"], job["feeds"]
    notes: list[str] = []
    if mode == "fp16":
        import warnings

        import onnx
        from onnxconverter_common import float16

        model = onnx.load(src)
        if _drop_input_casts(model):
            notes.append("removed skl2onnx's no-op input Cast before the float16 pass")
        with warnings.catch_warnings():  # "float32 number ... will be truncated": expected for fp16
            warnings.simplefilter("ignore")
            model = float16.convert_float_to_float16(model, keep_io_types=True)
        if _fix_fp16_casts(model):
            notes.append("retargeted Cast(-> float) nodes feeding float16 math to float16")
        onnx.save(model, dst)
        try:
            _check_runs(dst, feeds)
        except Exception as exc:
            return {"ok": False, "reason": f"the float16 model does not run in onnxruntime: {_first_line(exc)}"}
        return {"ok": True, "notes": notes}

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    def attempt(ops: list[str]) -> None:
        if mode == "dynamic":
            quantize_dynamic(src, dst, op_types_to_quantize=ops, weight_type=QuantType.QUInt8)
        else:
            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        _check_runs(dst, feeds)

    ops = list(job["ops"])
    try:
        attempt(ops)
        return {"ok": True, "notes": notes}
    except Exception as exc:
        first_error = _first_line(exc)
    # Some operator broke it: keep the op types that quantize and run on their own.
    good = []
    for op in ops:
        try:
            attempt([op])
            good.append(op)
        except Exception as exc:
            notes.append(f"left {op} in float: {_first_line(exc)}")
    if not good:
        if "Failed to find proper ai.onnx domain" in first_error:
            first_error = "nothing int8 can take (the graph has no ai.onnx operators onnxruntime quantizes)"
        return {"ok": False, "reason": first_error, "notes": notes}
    attempt(good)
    return {"ok": True, "notes": notes}


def main(argv: list[str]) -> int:
    job = pickle.loads(Path(argv[0]).read_bytes())  # written by _run_worker in this process tree
    try:
        result = _worker(job)
    except Exception as exc:
        result = {"ok": False, "reason": _first_line(exc)}
    print(json.dumps(result), flush=True)
    return 0


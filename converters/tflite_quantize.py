"""Keras model -> TFLite in each quantization mode, and the ``tflite`` quantizers.

A TFLite model is quantized while it is converted, so every mode converts again from the
source's Keras graph (``ctx.model.keras_model()``: flat float32 input ``[N, F]``, the
probabilities or values out) rather than from the fp32 file:

    none     float32
    fp16     float16 weights, float32 math on CPU
    dynamic  int8 weights, float activations (dynamic range). Does not load in tflite-runtime
             2.14: its FULLY_CONNECTED is op version 12 there; the manifest says so.
    static   full-integer int8 with a representative dataset from the calibration rows; the
             model's inputs/outputs stay float32 unless ``int8_io`` is asked for (the LiteRT
             backend applies scale and zero point either way).

TensorFlow is imported inside the functions (the ``edge-convert[tflite]`` extra).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from converters.quantizers import NotApplicable, QuantContext, register_quantizer
from edge_runtime.errors import ConversionError

log = logging.getLogger(__name__)

TFLITE_FILE = "model.tflite"
CALIBRATION_ROWS = 300  # the representative dataset; more rows add conversion time, not accuracy
EXTRA_HINT = "Install the TFLite converter: pip install 'edge-convert[tflite]' (tensorflow)"
DYNAMIC_NOTE = ("dynamic-range int8 uses op versions tflite-runtime 2.14 cannot load "
                "(FULLY_CONNECTED version 12): this artifact needs ai-edge-litert")


def import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ConversionError("converting to TFLite needs TensorFlow", hint=EXTRA_HINT) from exc
    return tf


def litert_requires() -> dict[str, str]:
    """The runtime package an artifact needs: the LiteRT release this conversion was verified with."""
    import importlib.metadata as md

    try:
        version = md.version("ai-edge-litert")
    except md.PackageNotFoundError:
        return {"ai-edge-litert": "1.0"}
    return {"ai-edge-litert": ".".join(version.split(".")[:2])}


def keras_to_tflite(model: Any, mode: str = "none", representative: np.ndarray | None = None,
                    int8_io: bool = False) -> bytes:
    """Convert a Keras model with one float input to TFLite bytes in ``mode``."""
    tf = import_tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode in ("dynamic", "static", "fp16"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "static":
        if representative is None or len(representative) == 0:
            raise NotApplicable("static int8 needs calibration rows: pass --calibration-data FILE")
        rep = np.asarray(representative, dtype=np.float32)[:CALIBRATION_ROWS]

        def dataset() -> Iterator[list[np.ndarray]]:
            for i in range(len(rep)):
                yield [rep[i:i + 1]]

        conv.representative_dataset = dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif mode not in ("none", "dynamic"):
        raise ConversionError(f"unknown TFLite quantization mode {mode!r}")
    # Keras 3 exports a SavedModel on the way and prints where; the library prints nothing.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            data: bytes = conv.convert()
        except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConversionError(f"the TFLite converter failed ({mode}): {first}") from exc
    return data


def write_tflite(model: Any, out_dir: Path, mode: str = "none", representative: np.ndarray | None = None,
                 int8_io: bool = False) -> Path:
    path = Path(out_dir) / TFLITE_FILE
    path.write_bytes(keras_to_tflite(model, mode, representative, int8_io))
    return path


# -- quantizers for the conversion pipeline ----------------------------------------------------
def _keras(ctx: QuantContext) -> Any:
    get = getattr(ctx.model, "keras_model", None)
    if get is None:
        raise NotApplicable(f"{ctx.model.model_class} has no TFLite graph to quantize")
    return get()


def _calibration(ctx: QuantContext) -> np.ndarray | None:
    name = ctx.exported.inputs[0].name
    parts = [f[name] for f in ctx.calibration if name in f]
    return np.concatenate(parts).astype(np.float32) if parts else None


def tflite_none(ctx: QuantContext, out_dir: Path) -> Path:
    path = Path(out_dir) / TFLITE_FILE
    path.write_bytes(Path(ctx.fp32).read_bytes())
    return path


def tflite_fp16(ctx: QuantContext, out_dir: Path) -> Path:
    return write_tflite(_keras(ctx), out_dir, "fp16")


def tflite_dynamic(ctx: QuantContext, out_dir: Path) -> Path:
    path = write_tflite(_keras(ctx), out_dir, "dynamic")
    ctx.notes.append(DYNAMIC_NOTE)
    return path


def tflite_static(ctx: QuantContext, out_dir: Path) -> Path:
    int8_io = bool(ctx.options.get("tflite_int8_io", False))
    path = write_tflite(_keras(ctx), out_dir, "static", _calibration(ctx), int8_io=int8_io)
    ctx.notes.append("full-integer int8, " + ("int8 inputs/outputs (the runtime converts floats)" if int8_io
                                               else "float32 inputs/outputs"))
    return path


register_quantizer("tflite", "none", tflite_none)
register_quantizer("tflite", "fp16", tflite_fp16)
register_quantizer("tflite", "dynamic", tflite_dynamic)
register_quantizer("tflite", "static", tflite_static)

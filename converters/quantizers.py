"""The quantizer registry: which quantization modes each target format offers.

Each format's module fills it in its last lines (``converters/quantize.py`` for ONNX,
``converters/tflite_quantize.py`` for TFLite); ``converters/convert.py`` imports both. A
quantizer writes one candidate model file and raises ``NotApplicable`` (with a reason a user
can read) when the mode cannot help this model.

    register_quantizer("tflite", "dynamic", fn)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConversionError

MODES = ("none", "dynamic", "static", "fp16", "auto")
DEFAULT_TIMEOUT_S = 120.0


class NotApplicable(Exception):
    """This mode cannot help this model; the message says why in plain words."""


@dataclass
class QuantContext:
    fp32: Path  # the exported full-precision model file
    model: Any  # converters.flavors.SourceModel
    exported: Any  # converters.flavors.Exported
    calibration: list[dict[str, np.ndarray]]  # feeds, one dict per batch
    timeout_s: float = DEFAULT_TIMEOUT_S
    notes: list[str] = field(default_factory=list)  # what the quantizer excluded or changed
    options: dict[str, Any] = field(default_factory=dict)  # format-specific, e.g. tflite_int8_io


Quantizer = Callable[[QuantContext, Path], Path]
_QUANTIZERS: dict[str, dict[str, Quantizer]] = {}


def register_quantizer(fmt: str, mode: str, fn: Quantizer) -> None:
    modes = _QUANTIZERS.setdefault(fmt, {})
    if mode in modes:
        raise ValueError(f"quantizer {fmt}/{mode} is already registered")
    modes[mode] = fn


def quantizer(fmt: str, mode: str) -> Quantizer:
    found = _QUANTIZERS.get(fmt, {}).get(mode)
    if found is None:
        raise ConversionError(f"--quantize {mode} is not available for --format {fmt}",
                              hint="Available: " + ", ".join(modes_for(fmt)))
    return found


def modes_for(fmt: str) -> list[str]:
    return sorted(_QUANTIZERS.get(fmt, {}))

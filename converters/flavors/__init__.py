"""Flavor registry: the MLflow flavor in ``MLmodel`` names which module loads the model.

A flavor module turns a resolved MLflow model into a ``SourceModel``: the original model
(``predict``, ``predict_proba``), what it is (task, classes, features) and one exporter per
target format. Each flavor module registers its loader in its last lines; adding a flavor
touches that module and one line in ``_MODULES``. Modules import their heavy libraries
inside functions, so importing ``converters`` stays cheap.

    from converters.flavors import register
    register("xgboost", load_xgboost_model)      # in converters/flavors/xgboost.py
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_runtime.errors import UnsupportedModel
from edge_runtime.manifest import TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from converters.source import FeatureHint, ModelSource

__all__ = ["Exported", "Exporter", "FlavorLoader", "SourceModel", "load_source_model", "register", "supported"]


@dataclass(frozen=True)
class Exported:
    """A model file written by an exporter, and how the runtime must feed and read it."""

    path: Path
    backend: str  # edge_runtime backend name: onnx | tflite
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]  # with roles: label / probabilities / value / other
    input_layout: str = "tensor"  # tensor | columns (see edge_runtime.manifest)
    requires: dict[str, str] = field(default_factory=dict)  # runtime package -> minimum version
    libraries: dict[str, str] = field(default_factory=dict)  # converter library versions used


# An exporter writes the full-precision model file into the given directory.
Exporter = Callable[[Path], Exported]


class SourceModel(Protocol):
    """The original model, loaded in-process, plus what a converter needs to know about it.

    ``predict``/``predict_proba`` take a DataFrame with ``feature_names`` columns. The flags
    tell quantizers what can apply: ``tree_ensemble`` models are never int8-quantized.
    """

    task: str  # classification | regression
    classes: tuple[Any, ...] | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]  # float | int | string
    missing_ok: tuple[str, ...]  # features where NaN/None is a legitimate value
    model_class: str
    flavor: str
    libraries: dict[str, str]
    tree_ensemble: bool
    exporters: dict[str, Exporter]  # target format -> exporter
    sample: Any  # DataFrame read from --sample-data, or None

    def predict(self, rows: pd.DataFrame) -> np.ndarray: ...

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray | None: ...


FlavorLoader = Callable[["ModelSource", "FeatureHint"], SourceModel]

_REGISTRY: dict[str, FlavorLoader] = {}
# MLflow flavor name -> module that registers its loader
_MODULES = {
    "sklearn": "converters.flavors.sklearn",
    "keras": "converters.flavors.keras",
    "tensorflow": "converters.flavors.keras",
    "pytorch": "converters.flavors.pytorch",
    "xgboost": "converters.flavors.boost",
    "lightgbm": "converters.flavors.boost",
    "onnx": "converters.flavors.onnx",
}


def register(flavor: str, loader: FlavorLoader) -> None:
    """Register the loader for an MLflow flavor; a second registration is refused."""
    if flavor in _REGISTRY:
        raise ValueError(f"flavor {flavor!r} already has a converter ({_REGISTRY[flavor]!r})")
    _REGISTRY[flavor] = loader


def supported() -> list[str]:
    return sorted(set(_MODULES) | set(_REGISTRY))


def _loader(flavors: list[str]) -> tuple[str, FlavorLoader]:
    for name in flavors:
        if name not in _REGISTRY and name in _MODULES:
            importlib.import_module(_MODULES[name])
        if name in _REGISTRY:
            return name, _REGISTRY[name]
    shown = ", ".join(f for f in flavors if f != "python_function") or "none"
    raise UnsupportedModel(f"MLflow flavor(s) {shown}", supported=supported(),
                           hint="Log the model with one of the supported flavors, or add a converter "
                           "module under converters/flavors/.")


def load_source_model(source: ModelSource, hint: FeatureHint) -> SourceModel:
    """Load the model behind ``source`` with the first flavor that has a converter."""
    _, loader = _loader(list(source.flavors))
    return loader(source, hint)

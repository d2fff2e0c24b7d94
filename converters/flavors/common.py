"""What several flavor modules share: library versions for the manifest, output specs of an
exported file, flat feature names, and a scores-to-answers base for neural source models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.features import Features, resolve_features
from converters.source import FeatureHint, ModelSource
from edge_runtime.manifest import TensorSpec


def versions(*dists: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def output_specs(path: Path, backend: str, task: str,
                 n_out: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an exported single-output file, the output tagged with its role."""
    from edge_runtime.backends import open_backend

    be = open_backend(backend, path)
    try:
        ins, outs = be.inputs(), be.outputs()
    finally:
        be.close()
    role = "probabilities" if task == "classification" else "value"
    first = TensorSpec(outs[0].name, "float32", (None, n_out), role)
    return tuple(ins), (first, *(TensorSpec(o.name, o.dtype, o.shape, "other") for o in outs[1:]))


def flat_features(source: ModelSource, hint: FeatureHint, width: int) -> Features:
    """Feature names for a model that takes ``width`` values; ``x0..`` for image/sequence inputs."""
    if source.columns is None and source.tensor_width is None and hint.n_features is None \
            and hint.sample_data is None:
        return Features(tuple(f"x{i}" for i in range(width)), ("float",) * width, "model")
    return resolve_features(source, hint, model_width=width)


class ScoresModel:
    """``predict``/``predict_proba`` for a source model whose ``_raw`` gives one row of scores per
    input: class probabilities (columns in ``classes`` order) or regression values."""

    task: str
    classes: tuple[Any, ...] | None

    def _raw(self, rows: Any) -> np.ndarray:
        raise NotImplementedError

    def predict(self, rows: Any) -> np.ndarray:
        y = self._raw(rows)
        if self.task == "classification":
            return np.asarray(self.classes)[np.argmax(y, axis=1)]
        return y[:, 0] if y.shape[1] == 1 else y

    def predict_proba(self, rows: Any) -> np.ndarray | None:
        return self._raw(rows) if self.task == "classification" else None

"""Which features a model takes: from the MLflow signature, else from the model itself,
else from what the user passed (--n-features / --sample-data). Shared by every flavor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError


@dataclass(frozen=True)
class Features:
    names: tuple[str, ...]
    types: tuple[str, ...]  # float | int | string
    origin: str  # signature | model | sample-data | n-features
    sample: Any = None  # DataFrame from --sample-data, already read


def _dtype_kind(series: Any) -> str:
    kind = series.dtype.kind
    if kind in "iub":
        return "int"
    if kind == "f":
        return "float"
    return "string"


def resolve_features(source: ModelSource, hint: FeatureHint, *, model_names: Sequence[str] | None = None,
                     model_width: int | None = None) -> Features:
    """Feature names and types; raise a ConversionError that says what to pass when unknown."""
    from converters.data import read_table

    sample = read_table(hint.sample_data, tuple(model_names) if model_names is not None else None) \
        if hint.sample_data else None
    if source.columns is not None:
        names = tuple(n for n, _ in source.columns)
        feats = Features(names, tuple(t for _, t in source.columns), "signature", sample)
    elif model_names is not None:
        names = tuple(str(n) for n in model_names)
        types = tuple(_dtype_kind(sample[n]) if sample is not None and n in sample.columns else "float"
                      for n in names)
        feats = Features(names, types, "model", sample)
    elif sample is not None:
        n = source.tensor_width or model_width or sample.shape[1]
        if sample.shape[1] != n:
            raise ConversionError(f"--sample-data has {sample.shape[1]} columns but the model takes {n} features")
        names = tuple(str(c) for c in sample.columns)
        feats = Features(names, tuple(_dtype_kind(sample[c]) for c in sample.columns), "sample-data", sample)
    elif source.tensor_width is not None or hint.n_features is not None:
        n = int(source.tensor_width or hint.n_features)  # type: ignore[arg-type]
        feats = Features(tuple(f"x{i}" for i in range(n)), ("float",) * n,
                         "signature" if source.tensor_width else "n-features")
    else:
        raise ConversionError(
            f"{source.uri} was logged without a signature, so its input features are unknown",
            hint="Pass --n-features N or --sample-data FILE (a CSV of typical rows), or log the model "
            "with input_example= / signature=")
    width = model_width
    if hint.n_features is not None and width is not None and hint.n_features != width:
        raise ConversionError(f"--n-features {hint.n_features} does not match the model, which takes {width}")
    if width is not None and len(feats.names) != width:
        raise ConversionError(f"the model takes {width} features but its signature/data name "
                              f"{len(feats.names)}: {', '.join(feats.names[:8])}")
    return feats

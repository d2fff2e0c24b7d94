"""The drift baseline stored in a manifest's ``reference``: histograms of the calibration data.

One format, written by ``edge-convert`` and read by drift monitoring and ``bench``::

    {"rows": N,
     "features": {name: {"kind": "numeric", "edges": [e0, ..., eB], "counts": [c1, ..., cB]}
                      | {"kind": "categorical", "counts": {value: n, ...}}},
     "prediction": <numeric histogram for regressors, categorical over labels for classifiers>}

Numeric histograms use up to 10 quantile bins; a value outside the edges counts in the
first or last bin. NaN values are left out and counted under ``missing``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 10
MAX_CATEGORIES = 50  # beyond this, rarer values are counted under "__other__"


def numeric(values: Any, bins: int = BINS) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"kind": "numeric", "edges": [], "counts": [], "missing": int(np.size(values))}
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    counts, _ = np.histogram(x, bins=edges)
    out: dict[str, Any] = {"kind": "numeric", "edges": [float(e) for e in edges],
                           "counts": [int(c) for c in counts]}
    missing = int(np.size(values) - x.size)
    if missing:
        out["missing"] = missing
    return out


def categorical(values: Sequence[Any]) -> dict[str, Any]:
    counts = Counter("__missing__" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                     for v in values)
    common = counts.most_common(MAX_CATEGORIES)
    out = dict(common)
    rest = sum(counts.values()) - sum(out.values())
    if rest:
        out["__other__"] = rest
    return {"kind": "categorical", "counts": out}


def build_reference(x: Any, feature_names: Sequence[str], predictions: Sequence[Any] | None = None, *,
                    feature_types: Sequence[str] | None = None, classification: bool | None = None,
                    classes: Sequence[Any] | None = None, bins: int = BINS) -> dict[str, Any]:
    """The ``reference`` entry from calibration rows and the model's predictions on them.

    ``x`` is a 2-D array (numeric features, in feature order) or a mapping / DataFrame of
    columns by feature name. String features (``feature_types``) get categorical counts.
    Predictions are categorical when ``classification`` (or ``classes``) is given.
    """
    types = list(feature_types or ["float"] * len(feature_names))
    feats: dict[str, Any] = {}
    for j, (name, kind) in enumerate(zip(feature_names, types, strict=True)):
        col = x[name] if not isinstance(x, np.ndarray) else x[:, j]
        col = col.tolist() if hasattr(col, "tolist") else list(col)
        feats[name] = categorical(col) if kind == "string" else numeric(col, bins)
    ref: dict[str, Any] = {"rows": len(x), "features": feats}
    if predictions is not None:
        is_clf = classification if classification is not None else classes is not None
        preds = list(predictions)
        ref["prediction"] = categorical(preds) if is_clf else numeric(
            np.asarray(preds, dtype=np.float64).reshape(len(preds), -1)[:, 0], bins)
    return ref

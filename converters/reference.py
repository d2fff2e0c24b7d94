"""The drift baseline stored in the manifest: per-feature and prediction histograms of the
calibration data (10 quantile bins for numbers, counts per value for categories)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 10
MAX_CATEGORIES = 50  # beyond this, rarer values are counted under "__other__"


def numeric(values: Any, bins: int = BINS) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
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


def build(rows: Any, names: Sequence[str], types: Sequence[str], task: str,
          predictions: Sequence[Any]) -> dict[str, Any]:
    """``{"rows", "features": {name: histogram}, "prediction": histogram}``."""
    feats = {n: categorical(rows[n].tolist()) if t == "string" else numeric(rows[n].to_numpy(dtype=np.float64))
             for n, t in zip(names, types, strict=True)}
    pred = categorical(list(predictions)) if task == "classification" else numeric(np.asarray(predictions))
    return {"rows": len(rows), "features": feats, "prediction": pred}

"""Benchmark rows: read from a file, or drawn from the manifest's reference histograms.

A numeric feature (``{"edges": [k+1], "counts": [k]}``, see edge_runtime/drift.py) picks a bin
with probability count/total, then a value uniformly inside it; a categorical one
(``{"kind": "categorical", "counts": {value: n}}`` or ``{"classes": [...], "counts": [...]}``)
picks a value by its frequency. Same manifest and seed, same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.errors import InvalidInput
from edge_runtime.manifest import Manifest

_NO_REFERENCE_HINT = "pass rows with --input FILE (JSON, CSV or .npy)"


def rows_from_reference(manifest: Manifest, n: int, seed: int = 0) -> np.ndarray | list[dict[str, Any]]:
    """``n`` rows like the calibration data: a 2-D float array for an all-numeric tensor model,
    else a list of dicts keyed by feature name."""
    ref = manifest.reference or {}
    features = ref.get("features")
    if not isinstance(features, dict) or not features:
        raise InvalidInput(f"artifact {manifest.name!r} has no reference histograms in its manifest to "
                           f"generate rows from; {_NO_REFERENCE_HINT}")
    if n < 1:
        raise InvalidInput(f"cannot generate {n} rows; ask for at least 1")
    rng = np.random.default_rng(seed)
    columns: list[np.ndarray] = []
    for name, kind in zip(manifest.feature_names, manifest.feature_types, strict=True):
        hist = features.get(name)
        if not isinstance(hist, dict):
            raise InvalidInput(f"the manifest's reference has no histogram for this feature; "
                               f"{_NO_REFERENCE_HINT}", feature=name)
        columns.append(_sample(name, kind, hist, n, rng))
    numeric = all(t != "string" for t in manifest.feature_types)
    if manifest.input_layout == "tensor" and numeric:
        return np.column_stack([c.astype(np.float64) for c in columns])
    return [{name: _plain(col[i]) for name, col in zip(manifest.feature_names, columns, strict=True)}
            for i in range(n)]


def _sample(name: str, kind: str, hist: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    def bad(reason: str) -> InvalidInput:
        return InvalidInput(f"reference histogram is unusable: {reason}; {_NO_REFERENCE_HINT}", feature=name)

    if hist.get("kind") == "categorical" or "classes" in hist:
        # {"counts": {value: n}} or {"classes": [values], "counts": [n]}
        counts = hist.get("counts")
        if isinstance(counts, list) and isinstance(hist.get("classes"), list) \
                and len(counts) == len(hist["classes"]):
            counts = dict(zip(hist["classes"], counts, strict=True))
        if not isinstance(counts, dict) or not counts:
            raise bad("categorical counts must map each value to its count")
        values = list(counts)
        weights = np.asarray([counts[v] for v in values], dtype=np.float64)
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise bad("categorical counts must be non-negative with a positive total")
        picked = rng.choice(len(values), size=n, p=weights / weights.sum())
        if kind == "string":
            return np.asarray(values, dtype=object)[picked]
        try:
            as_num = np.asarray([float(v) for v in values])
        except ValueError:
            raise bad(f"a {kind} feature has non-numeric categories") from None
        return as_num[picked]
    edges = np.asarray(hist.get("edges", []), dtype=np.float64)
    counts_arr = np.asarray(hist.get("counts", []), dtype=np.float64)
    if edges.ndim != 1 or counts_arr.ndim != 1 or edges.size != counts_arr.size + 1 or counts_arr.size == 0:
        raise bad("numeric histograms need k counts and k+1 edges")
    if not np.isfinite(edges).all() or (np.diff(edges) < 0).any():
        raise bad("edges must be finite and increasing")
    if (counts_arr < 0).any() or counts_arr.sum() <= 0:
        raise bad("counts must be non-negative with a positive total")
    if kind == "string":
        raise bad("a string feature needs a categorical histogram")
    bins = rng.choice(counts_arr.size, size=n, p=counts_arr / counts_arr.sum())
    drawn = rng.uniform(edges[bins], edges[bins + 1])
    return np.round(drawn) if kind == "int" else drawn


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def take_rows(rows: np.ndarray | list[Any], start: int, count: int) -> np.ndarray | list[Any]:
    """``count`` rows from ``start``, wrapping around to the beginning when rows run out."""
    n = len(rows)
    idx = [(start + i) % n for i in range(count)]
    if isinstance(rows, np.ndarray):
        return rows[idx]
    return [rows[i] for i in idx]


def n_rows(rows: np.ndarray | list[Any]) -> int:
    return int(rows.shape[0]) if isinstance(rows, np.ndarray) else len(rows)

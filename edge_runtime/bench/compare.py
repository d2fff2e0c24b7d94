"""Agreement between artifacts on the same rows, and accuracy against ground-truth labels."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InvalidInput


def _key(v: Any) -> Any:
    """Compare labels by value: 1, 1.0, "1" and "1.0" are the same class; "cat" is itself."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else str(v)


def agreement(task: str, ref_values: list[Any], values: list[Any], ref_proba: np.ndarray | None = None,
              proba: np.ndarray | None = None) -> dict[str, Any]:
    """How closely ``values`` follow ``ref_values`` (the first artifact's answers on the same rows).

    Classification: the share of identical labels and the largest probability difference.
    Regression: the largest and mean absolute difference of the values.
    """
    n = len(ref_values)
    if n == 0 or len(values) != n:
        raise ValueError(f"cannot compare {len(values)} answers with {n}")
    out: dict[str, Any] = {"rows": n}
    if task == "classification":
        same = sum(_key(a) == _key(b) for a, b in zip(ref_values, values, strict=True))
        out["label_agreement"] = same / n
        if ref_proba is not None and proba is not None and np.shape(ref_proba) == np.shape(proba):
            out["max_abs_diff"] = float(np.max(np.abs(np.asarray(ref_proba, float) - np.asarray(proba, float))))
        else:
            out["max_abs_diff"] = None
    else:
        a = np.asarray(ref_values, dtype=float)
        b = np.asarray(values, dtype=float)
        diff = np.abs(a - b)
        out["label_agreement"] = None
        out["max_abs_diff"] = float(diff.max())
        out["mean_abs_diff"] = float(diff.mean())
    return out


def accuracy(task: str, values: list[Any], labels: list[Any]) -> dict[str, Any]:
    """Classification: accuracy. Regression: MAE and RMSE. ``labels`` align with ``values``."""
    if len(values) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(values)} predictions")
    if task == "classification":
        hits = sum(_key(v) == _key(y) for v, y in zip(values, labels, strict=True))
        return {"rows": len(values), "accuracy": hits / len(values)}
    diff = np.asarray(values, dtype=float) - np.asarray(labels, dtype=float)
    return {"rows": len(values), "mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff**2).mean()))}


def read_labels(path: str | Path, task: str) -> list[Any]:
    """Ground truth, one per input row: .npy, a JSON list (or {"labels": [...]}), a CSV with one
    column (a header is optional) or plain text with one label per line."""
    name = str(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read --labels file {name}: {exc.strerror}") from exc
    if name.endswith(".npy") or data[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InvalidInput(f"--labels {name} is not a readable .npy array: {exc}") from exc
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise InvalidInput(f"--labels {name} must hold one label per row (1-D), got shape {arr.shape}")
        return arr.tolist()
    text = data.decode("utf-8-sig", errors="replace").strip()
    if text.startswith(("[", "{")):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--labels {name} is not valid JSON: {exc.msg}") from exc
        if isinstance(obj, dict):
            obj = obj.get("labels")
        if not isinstance(obj, list) or any(isinstance(v, (list, dict)) for v in obj):
            raise InvalidInput(f"--labels {name}: expected a JSON list of labels or {{\"labels\": [...]}}")
        return obj
    lines = list(csv.reader(io.StringIO(text)))
    if any(len(r) != 1 for r in lines if r):
        raise InvalidInput(f"--labels {name}: expected one column (one label per line)")
    cells = [r[0].strip() for r in lines if r]
    if cells and task == "regression":
        try:
            float(cells[0])
        except ValueError:
            cells = cells[1:]  # a header
    elif cells and len(cells) > 1 and not _numeric(cells[0]) and all(_numeric(c) for c in cells[1:]):
        cells = cells[1:]  # a header over numeric class labels
    if task == "regression":
        try:
            return [float(c) for c in cells]
        except ValueError as exc:
            raise InvalidInput(f"--labels {name}: regression labels must be numbers ({exc})") from None
    return cells


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True

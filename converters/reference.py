"""The drift baseline written into every manifest (format: ``edge_runtime/reference.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_runtime.reference import build_reference


def build(rows: Any, names: Sequence[str], types: Sequence[str], task: str,
          predictions: Sequence[Any]) -> dict[str, Any]:
    """Histograms of each feature of the calibration ``rows`` (a DataFrame) and of the predictions."""
    return build_reference(rows, names, predictions, feature_types=types, classification=task == "classification")

"""The parity gate: the artifact, run by edge_runtime exactly as a device runs it, against the
source model on held-out rows.

Classifiers: ``agreement`` is the share of rows with the same label; ``max_abs_diff`` /
``mean_abs_diff`` compare probabilities; the accuracy ``drop`` is ``1 - agreement``.
Regressors: the diffs compare values; the ``drop`` is ``mean_abs_diff`` relative to the spread
(standard deviation) of the source's predictions, and ``agreement`` is the share of rows whose
difference stays within ``threshold`` of that spread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.bench.runner import time_model

LATENCY_RUNS = 300
LATENCY_WARMUP = 30


def _labels_equal(a: list[Any], b: np.ndarray) -> np.ndarray:
    return np.array([x == y or str(x) == str(y) for x, y in zip(a, b.tolist(), strict=True)], dtype=bool)


def predict_rows(runtime: Any, rows: Any) -> list[Any]:
    """One ``predict`` call per row, as a device serves: dynamic int8 models scale activations
    per batch, so a row's answer can depend on the rows batched with it."""
    if runtime.manifest.input_layout == "tensor":
        arr = rows[list(runtime.manifest.feature_names)].to_numpy(dtype=np.float64)
        return [runtime.predict(arr[i]) for i in range(len(arr))]
    return [runtime.predict(r) for r in rows.to_dict("records")]


def measure(runtime: Any, model: Any, rows: Any, threshold: float) -> dict[str, Any]:
    """Compare ``runtime`` (an edge_runtime Runtime) with ``model`` (a SourceModel) on ``rows``."""
    preds = predict_rows(runtime, rows)
    result: dict[str, Any] = {"rows": len(rows), "threshold": threshold}
    if model.task == "classification":
        want = model.predict(rows)
        same = _labels_equal([p.value for p in preds], want)
        agreement = float(same.mean())
        result.update(agreement=round(agreement, 6), drop=round(1.0 - agreement, 6))
        src_p = model.predict_proba(rows)
        if src_p is not None and preds[0].probabilities is not None:
            classes = list(runtime.manifest.classes)
            got_p = np.array([[p.probabilities[c] for c in classes] for p in preds], dtype=np.float64)
            diff = np.abs(got_p - src_p)
            result.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                          compared="labels; probabilities")
        else:
            result.update(max_abs_diff=None, mean_abs_diff=None, compared="labels")
        result["passed"] = bool(result["drop"] <= threshold)
        return result
    want = np.asarray(model.predict(rows), dtype=np.float64).reshape(len(rows), -1)
    got = np.array([p.value for p in preds], dtype=np.float64).reshape(len(rows), -1)
    diff = np.abs(got - want)
    scale = float(want.std()) or 1.0
    per_row = diff.max(axis=1)
    drop = float(diff.mean()) / scale
    result.update(
        agreement=round(float((per_row <= threshold * scale).mean()), 6), drop=round(drop, 6),
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), scale=scale,
        compared="values (drop = mean_abs_diff / std of source predictions)",
        passed=bool(drop <= threshold),
    )
    return result


def latency(model: Any, rows: Any) -> tuple[float, float]:
    """p50 and mean ms of one backend call on one row, measured by ``edge-runtime bench``'s own
    code (``time_model``: the same feeds preparation and timing loop), so the choice of
    ``--quantize auto`` is the one bench would show.

    ``model`` is an ``edge_runtime.model.LoadedModel``.
    """
    stats = time_model(model, rows.iloc[:1], runs=LATENCY_RUNS, warmup=LATENCY_WARMUP)
    return stats.p50_ms, stats.mean_ms


def describe(p: dict[str, Any]) -> str:
    """One line for the console."""
    parts = [f"{p['rows']} held-out rows", f"agreement {p['agreement']:.4f}"]
    if p.get("max_abs_diff") is not None:
        parts.append(f"max |diff| {p['max_abs_diff']:.2e}, mean {p['mean_abs_diff']:.2e}")
    parts.append(f"drop {p['drop']:.4f} (limit {p['threshold']:g})")
    parts.append("PASSED" if p["passed"] else "FAILED")
    return ", ".join(parts)

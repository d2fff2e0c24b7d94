"""Drift of live inputs and predictions against the manifest's reference histograms.

Reference format: ``edge_runtime/reference.py`` (``build_reference`` makes it from
calibration data; ``edge-convert`` writes it into every manifest).

Live values are binned with the same edges (values outside go to the first/last bin) over a
sliding window of the last ``drift_window`` rows. Scores per feature and for the prediction:

- ``psi``: population stability index, Σ (q − p) ln(q / p); < 0.1 stable, > 0.2 shifted;
- ``js``: Jensen–Shannon divergence (base 2, 0..1);
- ``ks``: Kolmogorov–Smirnov statistic on the binned distributions (max CDF gap, 0..1).

The predict path only appends each row to a list; binning happens in chunks on the Runtime's
background thread. A feature crossing ``drift_threshold`` (for ``drift_method``) raises one
``drift_alert`` event; it re-arms once the score falls back below the threshold.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

METHODS = ("psi", "js", "ks")
DEFAULT_THRESHOLDS = {"psi": 0.2, "js": 0.1, "ks": 0.2}
_EPS = 1e-4


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges[1:-1], values, side="right"), 0, edges.size - 2)  # type: ignore[no-any-return]


def scores(ref_counts: np.ndarray, cur_counts: np.ndarray) -> dict[str, float]:
    """psi, js and ks between two count vectors over the same bins."""
    out = score_matrix(np.atleast_2d(ref_counts), np.atleast_2d(cur_counts))
    return {k: float(v[0]) for k, v in out.items()}


def score_matrix(ref: np.ndarray, cur: np.ndarray, only: str | None = None) -> dict[str, np.ndarray]:
    """Row-wise psi, js, ks for count matrices (one distribution per row, zero-padded bins);
    ``only`` computes just that one (the per-chunk check on the background thread)."""
    p = ref / np.maximum(ref.sum(axis=1, keepdims=True), 1)
    q = cur / np.maximum(cur.sum(axis=1, keepdims=True), 1)
    out: dict[str, np.ndarray] = {}
    if only in (None, "psi"):
        used = (ref > 0) | (cur > 0)  # padding bins (zero in both) contribute nothing
        ps, qs = np.clip(p, _EPS, None), np.clip(q, _EPS, None)
        out["psi"] = np.where(used, (qs - ps) * np.log(qs / ps), 0.0).sum(axis=1).round(6)
    if only in (None, "js"):
        m = (p + q) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
            kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
        out["js"] = np.maximum(0.0, (kl_p + kl_q) / 2).round(6)
    if only in (None, "ks"):
        out["ks"] = np.max(np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1)), axis=1).round(6)
    return out


PREDICTION = "__prediction__"


def _categorical(spec: dict[str, Any]) -> dict[str, Any]:
    """Both spellings of a categorical histogram as {"classes": [...], "counts": [...]}:
    the converter's ``{"kind": "categorical", "counts": {value: n}}`` and ``build_reference``'s."""
    counts = spec.get("counts")
    if isinstance(counts, dict):
        return {"classes": list(counts), "counts": [int(v) for v in counts.values()]}
    return spec


def _is_categorical(spec: dict[str, Any]) -> bool:
    return spec.get("kind") == "categorical" or isinstance(spec.get("counts"), dict) or "classes" in spec


class DriftMonitor:
    """Sliding-window histograms of live rows and predictions, scored against a reference.

    All distributions (features, then the prediction) live as rows of one zero-padded count
    matrix, so adding a chunk and scoring are a handful of numpy calls whatever the width.
    """

    def __init__(self, reference: dict[str, Any], feature_names: Sequence[str], *, window: int = 1000,
                 method: str = "psi", threshold: float | None = None, min_rows: int = 100) -> None:
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.window = max(1, window)
        self.min_rows = min_rows
        feats = reference.get("features") or {}
        self._cols: list[tuple[int, str, np.ndarray]] = []  # (feature index, name, edges)
        refs = []
        for j, name in enumerate(feature_names):
            spec = feats.get(name)
            # categorical features (string columns) have no edges to bin live values with;
            # their drift is not scored (the prediction's still is)
            if spec and not _is_categorical(spec) and spec.get("edges") and spec.get("counts"):
                self._cols.append((j, name, np.asarray(spec["edges"], float)))
                refs.append(np.asarray(spec["counts"], float))
        pred = _categorical(reference.get("prediction") or {})
        self._pred_edges = np.asarray(pred["edges"], float) if pred.get("edges") else None
        self._pred_classes = {str(c): i for i, c in enumerate(pred.get("classes") or [])}
        self._has_pred = bool(pred.get("counts"))
        if self._has_pred:
            refs.append(np.asarray(pred["counts"], float))
        self.names = [c[1] for c in self._cols] + ([PREDICTION] if self._has_pred else [])
        width = max((r.size for r in refs), default=1)
        self._ref = np.zeros((len(refs), width))
        for i, r in enumerate(refs):
            self._ref[i, :r.size] = r
        self._cur = np.zeros_like(self._ref)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._rows = 0
        self._alerted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.names)

    def add(self, x: np.ndarray | None, preds: Sequence[Any]) -> dict[str, float]:
        """Add rows (n x features, float; None when no numeric features) and their predictions.

        Returns the scores that newly crossed the threshold ({name: score}), for an alert.
        """
        n = len(preds)
        if n == 0:
            return {}
        h = np.zeros_like(self._ref)
        width = h.shape[1]
        if x is not None:
            for k, (j, _name, edges) in enumerate(self._cols):
                col = x[:, j]
                h[k, :edges.size - 1] = np.bincount(_bin(col[np.isfinite(col)], edges),
                                                    minlength=edges.size - 1)[:width]
        if self._has_pred:
            if self._pred_edges is not None:
                v = np.asarray([p[0] if isinstance(p, list) else p for p in preds], dtype=float)
                b = np.bincount(_bin(v[np.isfinite(v)], self._pred_edges), minlength=self._pred_edges.size - 1)
            else:
                idx = [self._pred_classes.get(str(p), -1) for p in preds]
                b = np.bincount([i for i in idx if i >= 0], minlength=len(self._pred_classes))
            h[-1, :b.size] = b[:width]
        with self._lock:
            self._chunks.append((n, h))
            self._cur += h
            self._rows += n
            while self._chunks and self._rows - self._chunks[0][0] >= self.window:
                old_n, old_h = self._chunks.popleft()
                self._rows -= old_n
                self._cur -= old_h
            if self._rows < self.min_rows:
                return {}
            sc = score_matrix(self._ref, self._cur, only=self.method)[self.method]
            new = {}
            for name, v in zip(self.names, sc.tolist(), strict=True):
                if v > self.threshold and name not in self._alerted:
                    self._alerted.add(name)
                    new[name] = v
                elif v <= self.threshold:
                    self._alerted.discard(name)
            return new

    def report(self) -> dict[str, Any]:
        with self._lock:
            rows = self._rows
            mat = score_matrix(self._ref, self._cur) if rows else None
        all_scores: dict[str, dict[str, float]] = {}
        if mat is not None:
            for i, name in enumerate(self.names):
                all_scores[name] = {k: float(v[i]) for k, v in mat.items()}
        pred = all_scores.pop(PREDICTION, None)
        ready = rows >= self.min_rows
        drifted = sorted(n for n, s in all_scores.items() if ready and s[self.method] > self.threshold)
        if ready and pred is not None and pred[self.method] > self.threshold:
            drifted.append(PREDICTION)
        return {"method": self.method, "threshold": self.threshold, "window_rows": rows,
                "min_rows": self.min_rows, "ready": ready, "features": all_scores, "prediction": pred,
                "drifted": drifted}

"""Drift of live inputs and predictions against the manifest's reference histograms.

Reference format (``manifest.reference``; ``build_reference`` makes it from calibration data)::

    {"rows": 500, "bins": 10,
     "features": {"tenure": {"edges": [e0, ..., eB], "counts": [c1, ..., cB]}, ...},
     "prediction": {"edges": [...], "counts": [...]}            # regression
                 | {"classes": ["a", "b"], "counts": [..]}}    # classification

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


def build_reference(x: np.ndarray, feature_names: Sequence[str], predictions: Sequence[Any] | None = None,
                    *, classes: Sequence[Any] | None = None, bins: int = 10) -> dict[str, Any]:
    """The ``reference`` manifest entry from calibration rows (numeric features) and predictions."""
    x = np.asarray(x, dtype=float)
    ref: dict[str, Any] = {"rows": int(x.shape[0]), "bins": bins, "features": {}}
    for j, name in enumerate(feature_names):
        ref["features"][name] = _hist(x[:, j], bins)
    if predictions is not None:
        if classes:
            labels = [str(p) for p in predictions]
            ref["prediction"] = {"classes": list(classes),
                                 "counts": [labels.count(str(c)) for c in classes]}
        else:
            ref["prediction"] = _hist(np.asarray(predictions, dtype=float).reshape(len(predictions), -1)[:, 0],
                                      bins)
    return ref


def _hist(col: np.ndarray, bins: int) -> dict[str, list[float]]:
    col = col[np.isfinite(col)]
    edges = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1))) if col.size else np.array([0.0, 1.0])
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    counts = np.bincount(_bin(col, edges), minlength=edges.size - 1)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges[1:-1], values, side="right"), 0, edges.size - 2)  # type: ignore[no-any-return]


def scores(ref_counts: np.ndarray, cur_counts: np.ndarray) -> dict[str, float]:
    """psi, js and ks between two count vectors over the same bins."""
    p = ref_counts / max(ref_counts.sum(), 1)
    q = cur_counts / max(cur_counts.sum(), 1)
    ps, qs = np.clip(p, _EPS, None), np.clip(q, _EPS, None)
    psi = float(np.sum((qs - ps) * np.log(qs / ps)))
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    js = float(max(0.0, (kl_p + kl_q) / 2))
    ks = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
    return {"psi": round(psi, 6), "js": round(js, 6), "ks": round(ks, 6)}


class DriftMonitor:
    """Sliding-window histograms of live rows and predictions, scored against a reference."""

    def __init__(self, reference: dict[str, Any], feature_names: Sequence[str], *, window: int = 1000,
                 method: str = "psi", threshold: float | None = None, min_rows: int = 100) -> None:
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.window = max(1, window)
        self.min_rows = min_rows
        feats = reference.get("features") or {}
        self._cols: list[tuple[int, str, np.ndarray, np.ndarray]] = []  # (index, name, edges, ref counts)
        for j, name in enumerate(feature_names):
            spec = feats.get(name)
            if spec and spec.get("edges") and spec.get("counts"):
                self._cols.append((j, name, np.asarray(spec["edges"], float), np.asarray(spec["counts"], float)))
        pred = reference.get("prediction") or {}
        self._pred_edges = np.asarray(pred["edges"], float) if pred.get("edges") else None
        self._pred_classes = {str(c): i for i, c in enumerate(pred.get("classes") or [])}
        self._pred_ref = np.asarray(pred["counts"], float) if pred.get("counts") else None
        self._chunks: deque[tuple[int, list[np.ndarray], np.ndarray | None]] = deque()
        self._rows = 0
        self._alerted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._cols) or self._pred_ref is not None

    def add(self, x: np.ndarray | None, preds: Sequence[Any]) -> dict[str, float]:
        """Add rows (n x features, float; None when no numeric features) and their predictions.

        Returns the scores that newly crossed the threshold ({name: score}), for an alert.
        """
        n = len(preds)
        if n == 0:
            return {}
        hists = []
        if x is not None:
            for j, _name, edges, _ref in self._cols:
                col = x[:, j]
                col = col[np.isfinite(col)]
                hists.append(np.bincount(_bin(col, edges), minlength=edges.size - 1))
        ph = None
        if self._pred_ref is not None:
            if self._pred_edges is not None:
                v = np.asarray([p[0] if isinstance(p, list) else p for p in preds], dtype=float)
                ph = np.bincount(_bin(v[np.isfinite(v)], self._pred_edges), minlength=self._pred_edges.size - 1)
            else:
                idx = [self._pred_classes.get(str(p), -1) for p in preds]
                ph = np.bincount([i for i in idx if i >= 0], minlength=len(self._pred_classes))
        with self._lock:
            self._chunks.append((n, hists, ph))
            self._rows += n
            while self._chunks and self._rows - self._chunks[0][0] >= self.window:
                self._rows -= self._chunks.popleft()[0]
            return self._crossings()

    def _crossings(self) -> dict[str, float]:
        if self._rows < self.min_rows:
            return {}
        new = {}
        for name, sc in self._score_all().items():
            s = sc[self.method]
            if s > self.threshold and name not in self._alerted:
                self._alerted.add(name)
                new[name] = s
            elif s <= self.threshold:
                self._alerted.discard(name)
        return new

    def _score_all(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if not self._chunks:
            return out
        for k, (_j, name, _edges, ref) in enumerate(self._cols):
            cur = np.sum([c[1][k] for c in self._chunks if c[1]], axis=0)
            out[name] = scores(ref, np.asarray(cur, float))
        if self._pred_ref is not None:
            cur = np.sum([c[2] for c in self._chunks if c[2] is not None], axis=0)
            out["__prediction__"] = scores(self._pred_ref, np.asarray(cur, float))
        return out

    def report(self) -> dict[str, Any]:
        with self._lock:
            all_scores = self._score_all() if self._rows else {}
            rows = self._rows
        pred = all_scores.pop("__prediction__", None)
        ready = rows >= self.min_rows
        drifted = sorted(n for n, s in all_scores.items() if ready and s[self.method] > self.threshold)
        if ready and pred is not None and pred[self.method] > self.threshold:
            drifted.append("__prediction__")
        return {"method": self.method, "threshold": self.threshold, "window_rows": rows,
                "min_rows": self.min_rows, "ready": ready, "features": all_scores, "prediction": pred,
                "drifted": drifted}

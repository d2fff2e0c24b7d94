"""Probation: does a newly activated version do its job as well as the one it replaced?

The figures are what ``predict`` measured inside the runtime for that version alone (never HTTP
time): its error rate, fallback rate and p99 latency. A verdict is one of

- ``breach``       a figure is over an absolute limit from config, or clearly worse than the
                   previous version's recorded figure: roll back, saying which and by how much;
- ``pass``         the window is over, enough predictions were seen and nothing breached: commit;
- ``inconclusive`` the window is over with fewer than ``min_predictions``: stay in probation
                   (never commit on too little evidence) and say so;
- ``wait``         the window is still open.

A breach ends probation as soon as ``min_predictions`` have been seen, before the window ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge_runtime.metrics import VersionMetrics

P99_MIN_SAMPLES = 100  # below this a "p99" is the maximum of a few calls: not compared


@dataclass(frozen=True)
class Figures:
    predictions: int
    errors: int
    fallbacks: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.predictions if self.predictions else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.predictions if self.predictions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 6), "fallback_rate": round(self.fallback_rate, 6)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Figures | None:
        if not d:
            return None
        return cls(int(d.get("predictions", 0)), int(d.get("errors", 0)), int(d.get("fallbacks", 0)),
                   d.get("p99_ms"))


def figures(metrics: VersionMetrics) -> Figures:
    """A version's figures from its own metrics; a caller's invalid input does not count."""
    counts = metrics.totals()[0]
    n = errors = fallbacks = 0
    for (_, source, outcome), c in counts.items():
        if outcome == "invalid_input":
            continue
        n += c
        errors += c if outcome == "error" else 0
        fallbacks += c if source == "fallback" else 0
    return Figures(n, errors, fallbacks, metrics.percentiles().get("p99"))


@dataclass(frozen=True)
class Limits:
    window_s: float
    min_predictions: int
    max_error_rate: float
    max_fallback_rate: float
    max_p99_ms: float | None
    max_p99_ratio: float = 3.0  # worse than this many times the previous version's p99 ...
    p99_slack_ms: float = 5.0  # ... and by more than this is a breach (a busy device jitters by ms)


@dataclass(frozen=True)
class Verdict:
    state: str  # wait | pass | breach | inconclusive
    reason: str
    figures: Figures


def judge(now: Figures, baseline: Figures | None, limits: Limits, elapsed_s: float) -> Verdict:
    enough = now.predictions >= limits.min_predictions
    if enough:
        breach = _breach(now, baseline, limits)
        if breach:
            return Verdict("breach", breach, now)
    if elapsed_s < limits.window_s:
        return Verdict("wait", f"{now.predictions} of {limits.min_predictions} predictions, "
                       f"{elapsed_s:.0f} of {limits.window_s:.0f} s", now)
    if not enough:
        return Verdict("inconclusive", f"window of {limits.window_s:.0f} s ended with {now.predictions} "
                       f"predictions, fewer than the {limits.min_predictions} needed; probation continues", now)
    p99 = f"{now.p99_ms:.3f} ms" if now.p99_ms is not None else "n/a"
    return Verdict("pass", f"{now.predictions} predictions over {elapsed_s:.0f} s: error rate "
                   f"{now.error_rate:.4f}, fallback rate {now.fallback_rate:.4f}, p99 {p99}", now)


def _breach(now: Figures, base: Figures | None, lim: Limits) -> str | None:
    if now.error_rate > lim.max_error_rate:
        return (f"error rate {now.error_rate:.4f} is over max_error_rate {lim.max_error_rate} "
                f"by {now.error_rate - lim.max_error_rate:.4f}")
    if now.fallback_rate > lim.max_fallback_rate:
        return (f"fallback rate {now.fallback_rate:.4f} is over max_fallback_rate {lim.max_fallback_rate} "
                f"by {now.fallback_rate - lim.max_fallback_rate:.4f}")
    p99 = now.p99_ms
    if p99 is not None and lim.max_p99_ms is not None and p99 > lim.max_p99_ms:
        return f"p99 {p99:.3f} ms is over max_p99_ms {lim.max_p99_ms} by {p99 - lim.max_p99_ms:.3f} ms"
    if base is None or base.predictions < lim.min_predictions:
        return None  # nothing reliable to compare with
    if now.error_rate > base.error_rate + lim.max_error_rate:
        return (f"error rate {now.error_rate:.4f} against {base.error_rate:.4f} for the previous version "
                f"(more than max_error_rate {lim.max_error_rate} worse)")
    if (p99 is not None and base.p99_ms is not None and min(now.predictions, base.predictions) >= P99_MIN_SAMPLES
            and p99 > lim.max_p99_ratio * base.p99_ms and p99 - base.p99_ms > lim.p99_slack_ms):
        return (f"p99 {p99:.3f} ms against {base.p99_ms:.3f} ms for the previous version "
                f"({p99 / base.p99_ms:.1f}x, over max_p99_ratio {lim.max_p99_ratio}x and "
                f"{lim.p99_slack_ms} ms more)")
    return None

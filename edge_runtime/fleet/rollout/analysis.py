"""Promote, hold or roll back a step, from the canary devices' figures in the window against the
baseline devices' and the plan's limits.

Rates are judged by their 95% Wilson interval, so the sample size counts: a step promotes only
when the canary's error rate is *confidently* under the limit (its upper bound), and rolls back
only when it is confidently over it (its lower bound) or confidently worse than the baseline (the
canary's lower bound above the baseline's upper bound). In between, and whenever there are fewer
than ``min_samples`` predictions, the step holds and keeps collecting: missing or empty metrics
never pass a step. p99 is compared with ``max_p99_ms`` once there are enough samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge_runtime.fleet.rollout.plan import Plan

Z95 = 1.959964


@dataclass(frozen=True)
class Figures:
    """What a set of devices did in the window."""

    samples: int = 0  # predictions answered (model, cache or fallback) plus errors
    errors: int = 0
    fallbacks: int = 0
    p99_ms: float | None = None  # the worst device's p99
    devices: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"samples": self.samples, "errors": self.errors,
                                            "fallbacks": self.fallbacks, "p99_ms": self.p99_ms,
                                            "devices": self.devices}
        for name, k in (("error", self.errors), ("fallback", self.fallbacks)):
            lo, hi = wilson(k, self.samples)
            d[f"{name}_rate"] = round(k / self.samples, 6) if self.samples else None
            d[f"{name}_rate_95"] = [round(lo, 6), round(hi, 6)] if self.samples else None
        return d


@dataclass(frozen=True)
class Decision:
    action: str  # promote | hold | rollback
    reason: str


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials: (lower, upper); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    k = max(0, min(k, n))
    if k == 0:  # exactly: the general form leaves a rounding residue at the ends
        return 0.0, z * z / (n + z * z)
    if k == n:
        return n / (n + z * z), 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def decide(plan: Plan, canary: Figures, baseline: Figures | None) -> Decision:
    """The step's decision and its reason, in words an operator reads in ``rollout status``."""
    n = canary.samples
    if n < plan.min_samples or n == 0:
        return Decision("hold", f"inconclusive: {n} of the {plan.min_samples} predictions needed in the window "
                                f"from {canary.devices} canary device(s)")
    base_ok = baseline is not None and baseline.samples >= max(1, plan.min_samples)
    checks = [("error", canary.errors, plan.max_error_rate, baseline.errors if baseline else 0)]
    if plan.max_fallback_rate is not None:
        checks.append(("fallback", canary.fallbacks, plan.max_fallback_rate, baseline.fallbacks if baseline else 0))
    for name, k, limit, base_k in checks:
        lo, hi = wilson(k, n)
        if lo > limit:
            return Decision("rollback", f"{name} rate {k / n:.4f} ({k} of {n}); at least {lo:.4f} at 95% "
                                        f"confidence, over max_{name}_rate {limit:g}")
        if base_ok and baseline is not None:
            b_hi = wilson(base_k, baseline.samples)[1]
            if lo > b_hi:
                return Decision("rollback", f"{name} rate {k / n:.4f} is above the baseline's "
                                            f"{base_k / baseline.samples:.4f} at 95% confidence "
                                            f"(canary at least {lo:.4f}, baseline at most {b_hi:.4f})")
    if plan.max_p99_ms is not None and canary.p99_ms is not None and canary.p99_ms > plan.max_p99_ms:
        return Decision("rollback", f"p99 {canary.p99_ms:.1f} ms over max_p99_ms {plan.max_p99_ms:g}")
    if plan.max_p99_ms is not None and canary.p99_ms is None:
        return Decision("hold", "inconclusive: no canary device reported a p99 latency yet")
    for name, k, limit, base_k in checks:
        lo, hi = wilson(k, n)
        bound = limit
        if base_ok and baseline is not None:
            bound = max(limit, wilson(base_k, baseline.samples)[1])
        if hi > bound:
            return Decision("hold", f"not yet conclusive: the {name} rate may be up to {hi:.4f} (95%), above "
                                    f"{bound:.4f}; collecting more predictions")
    return Decision("promote", f"{n} predictions: error rate {canary.errors / n:.4f} (at most "
                               f"{wilson(canary.errors, n)[1]:.4f} at 95%)"
                    + (f", p99 {canary.p99_ms:.1f} ms" if canary.p99_ms is not None else ""))

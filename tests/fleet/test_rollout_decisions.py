"""The parts of a fleet rollout that decide: the plan, step membership (the DESIGN formula, and
devices that were in stay in), and promote / hold / roll back with sample sizes counted."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.rollout import Figures, Plan, decide, in_step, load_plan, members, wilson
from edge_runtime.fleet.rollout.plan import build, parse_steps


def test_membership_is_the_documented_hash_and_grows_with_the_share() -> None:
    rid, devices = "r-1", [f"pi-{i:04d}" for i in range(1000)]
    for d in devices[:50]:
        want = int(hashlib.sha256(("r-1" + d).encode()).hexdigest(), 16) % 10_000 < 500
        assert in_step(rid, d, 5) is want
    shares = [1, 5, 25, 50, 100]
    steps = [set(members(rid, devices, p)) for p in shares]
    for small, big in itertools.pairwise(steps):
        assert small <= big  # a device that was in stays in
    for p, s in zip(shares, steps, strict=True):
        assert abs(len(s) / 1000 - p / 100) < 0.03 + 0.0001, (p, len(s))
    assert steps[-1] == set(devices)
    assert members("other", devices, 5) != members(rid, devices, 5)  # another rollout, other canaries


def test_the_first_step_of_a_small_group_has_one_device() -> None:
    assert len(members("r", ["a", "b", "c"], 1)) == 1
    assert members("r", [], 1) == []
    assert members("r", ["a", "b"], 1) == members("r", ["b", "a"], 1)  # order does not matter


def test_plans_from_flags_and_toml(tmp_path: Path) -> None:
    assert [s.label() for s in parse_steps("1,5,pause,25,100")] == ["1%", "5%", "pause", "25%", "100%"]
    p = tmp_path / "plan.toml"
    p.write_text('steps = [1, 10, "pause", 100]\nwindow = "2m"\nmax_error_rate = 0.02\nmax_p99_ms = 40\n'
                 'min_samples = 200\nmax_failed = 2\n')
    plan = load_plan(p)
    assert plan.window_s == 120 and plan.max_p99_ms == 40 and plan.min_samples == 200 and plan.max_failed == 2
    assert Plan.from_dict(plan.to_dict()) == plan
    for bad, key in (([5, 1, 100], "steps"), ([1, 50], "steps"), ([0, 100], "steps"), (["x", 100], "steps")):
        with pytest.raises(ConfigError) as e:
            build({"steps": bad})
        assert e.value.key == key
    with pytest.raises(ConfigError, match="duration"):
        build({"window": "soon"})
    with pytest.raises(ConfigError) as e:
        build({"steps": [100], "colour": 1})
    assert e.value.key == "colour"
    p.write_text("steps = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_plan(p)


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson(0, 500)
    assert lo == 0.0 and hi == pytest.approx(0.00762, abs=1e-4)
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(k=st.integers(0, 5000), n=st.integers(1, 5000))
def test_wilson_bounds_hold_the_rate(k: int, n: int) -> None:
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


PLAN = build({"steps": [1, 100], "max_error_rate": 0.01, "min_samples": 500, "max_p99_ms": 50})


@pytest.mark.parametrize(("canary", "baseline", "action", "says"), [
    (Figures(0, devices=3), None, "hold", "inconclusive: 0 of the 500"),  # no metrics never pass
    (Figures(499, 0, p99_ms=5), None, "hold", "inconclusive: 499"),
    (Figures(500, 0, p99_ms=5), None, "promote", "500 predictions"),
    (Figures(500, 2, p99_ms=5), None, "hold", "not yet conclusive"),  # 0.4%, but 500 samples cannot show < 1%
    (Figures(5000, 20, p99_ms=5), None, "promote", ""),  # 0.4% on 5,000: confidently under 1%
    (Figures(500, 30, p99_ms=5), None, "rollback", "over max_error_rate"),
    (Figures(5000, 40, p99_ms=5), Figures(50000, 10, p99_ms=5), "rollback", "above the baseline's"),
    (Figures(600, 0, p99_ms=80), None, "rollback", "p99 80.0 ms over max_p99_ms 50"),
    (Figures(600, 0, p99_ms=None), None, "hold", "no canary device reported a p99"),
])
def test_decisions(canary: Figures, baseline: Figures | None, action: str, says: str) -> None:
    d = decide(PLAN, canary, baseline)
    assert d.action == action and says in d.reason, d


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 20000), k=st.integers(0, 20000), bn=st.integers(0, 20000), bk=st.integers(0, 20000))
def test_a_step_never_promotes_on_too_few_samples_or_a_confidently_bad_rate(n: int, k: int, bn: int, bk: int) -> None:
    k, bk = min(k, n), min(bk, bn)
    d = decide(PLAN, Figures(n, k, p99_ms=1.0), Figures(bn, bk, p99_ms=1.0))
    if d.action == "promote":
        assert n >= 500 and wilson(k, n)[1] <= max(0.01, wilson(bk, bn)[1] if bn >= 500 else 0.01)
    if wilson(k, n)[0] > 0.01 and n >= 500:
        assert d.action == "rollback"

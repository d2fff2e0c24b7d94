"""How --quantize auto chooses among measured candidates (the rule, on made-up measurements)."""

from __future__ import annotations

import pytest

from converters.quantize import Candidate, select
from edge_runtime.errors import ConversionError


def _c(mode: str, size: int | None, p50_ms: float | None, drop: float | None, reason: str = "") -> Candidate:
    return Candidate(mode, size_bytes=size, p50_ms=p50_ms, drop=drop, agreement=None if drop is None else 1 - drop,
                     reason=reason)


def test_smallest_within_limits_wins_and_every_candidate_says_why() -> None:
    cands = [_c("none", 1000, 0.020, 0.0), _c("fp16", 520, 0.021, 0.0), _c("dynamic", 300, 0.030, 0.0),
             _c("static", 250, 0.019, 0.05), _c("tflite", None, None, None, "not applicable: nope")]
    best = select(cands, 0.01)
    assert best.mode == "fp16" and best.chosen and "0.52x fp32" in best.reason
    by = {c.mode: c for c in cands}
    assert "slower than fp32" in by["dynamic"].reason and not by["dynamic"].kept
    assert "accuracy drop 0.0500 > 0.01" in by["static"].reason
    assert "larger than fp16" in by["none"].reason and by["none"].kept
    assert by["tflite"].reason == "not applicable: nope"


def test_fp32_kept_when_nothing_smaller_passes() -> None:
    cands = [_c("none", 1000, 0.020, 0.0), _c("dynamic", 1500, 0.019, 0.0)]
    assert select(cands, 0.01).mode == "none"


def test_no_candidate_passes() -> None:
    with pytest.raises(ConversionError, match="no candidate passed: none: accuracy drop"):
        select([_c("none", 1000, 0.020, 0.2)], 0.01)

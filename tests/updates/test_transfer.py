"""The chunk format, the staging area's resume after a crash, and probation's verdicts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.updates.probation import Figures, Limits, judge
from edge_runtime.updates.transfer import (
    Meta,
    Staging,
    TransferError,
    decode_chunk,
    encode_chunk,
    expand,
    make_meta,
    ranges,
)
from tests.updates_kit import signed_artifact


def _artifact(tmp_path: Path, size: int) -> Path:
    art = signed_artifact(tmp_path / "art", "1", None)
    # pad the model file (the fake backend reads JSON; padding after it is fine for transfer)
    with open(art / "model.json", "ab") as f:
        f.write(b" " * (size - (art / "model.json").stat().st_size))
    m = json.loads((art / "manifest.json").read_text())
    m["sha256"] = hashlib.sha256((art / "model.json").read_bytes()).hexdigest()
    m["size_bytes"] = size
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def _meta(art: Path, chunk: int) -> Meta:
    d = make_meta(art, chunk)
    return Meta.parse(json.dumps(d).encode(), d["id"])


def test_a_chunk_round_trips_and_a_flipped_byte_is_caught() -> None:
    data = os.urandom(1000)
    i, n, got = decode_chunk(encode_chunk(3, 9, data))
    assert (i, n, got) == (3, 9, data)
    bad = bytearray(encode_chunk(3, 9, data))
    bad[-1] ^= 1
    with pytest.raises(TransferError, match="does not match its hash"):
        decode_chunk(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_payload_is_a_chunk_or_a_transfer_error(payload: bytes) -> None:
    try:
        decode_chunk(payload)
    except TransferError:
        pass


def test_requests_are_ranges_and_bounded() -> None:
    assert ranges([5, 3, 4, 9]) == [[3, 6], [9, 10]]
    assert expand([[3, 6], [9, 10]], 100, 1000) == [3, 4, 5, 9]
    assert expand([[0, 10**9]], 100, 1000) == list(range(100))  # clipped to the artifact
    assert len(expand([[0, 10**9]], 10**9, 16)) == 16  # and to the limit
    assert expand("junk", 10, 10) == [] and expand([[1, "x"], None], 10, 10) == []


def test_a_meta_must_hash_to_the_artifact_asked_for(tmp_path: Path) -> None:
    art = _artifact(tmp_path, 5000)
    d = make_meta(art, 1024)
    with pytest.raises(TransferError, match="does not hash"):
        Meta.parse(json.dumps(d).encode(), "0" * 64)
    with pytest.raises(TransferError, match="impossible chunk layout"):
        Meta.parse(json.dumps({**d, "chunks": 2}).encode(), d["id"])
    with pytest.raises(TransferError, match="unsafe file"):
        Meta.parse(json.dumps({**d, "file": "../../etc/passwd"}).encode(), d["id"])


def test_staging_resumes_from_its_checkpoint_and_checks_the_whole_file(tmp_path: Path) -> None:
    art = _artifact(tmp_path, 10_000)
    meta = _meta(art, 1024)
    data = (art / "model.json").read_bytes()
    chunk = [data[i:i + 1024] for i in range(0, len(data), 1024)]
    st1 = Staging(tmp_path / "stage", meta)
    for i in (0, 1, 2, 5):
        assert st1.write(i, chunk[i])
    assert not st1.write(3, chunk[3][:-1])  # wrong size: refused
    st1.checkpoint()
    assert st1.write(6, chunk[6])  # received after the last checkpoint: "lost" in the crash below
    st1.close()  # (a crash: no further checkpoint)
    os.truncate(tmp_path / "stage" / "model.json.part", meta.size_bytes)
    st2 = Staging(tmp_path / "stage", meta)
    assert st2.missing(100) == [3, 4, 6, 7, 8, 9] or st2.missing(100) == [3, 4, 7, 8, 9]
    for i in st2.missing(100):
        st2.write(i, chunk[i])
    assert st2.complete and st2.percent == 100.0
    out = st2.finish()
    assert (out / "model.json").read_bytes() == data and not (out / "have").exists()


def test_a_whole_file_that_does_not_match_starts_over(tmp_path: Path) -> None:
    art = _artifact(tmp_path, 3000)
    meta = _meta(art, 1024)
    st1 = Staging(tmp_path / "stage", meta)
    for i in range(meta.chunks):
        st1.write(i, b"x" * min(1024, 3000 - i * 1024))  # right sizes, wrong bytes
    with pytest.raises(ValueError, match="sha256"):
        st1.finish()
    assert Staging(tmp_path / "stage", meta).missing(10) == [0, 1, 2]


# -- probation ------------------------------------------------------------------------------------
LIM = Limits(window_s=60, min_predictions=100, max_error_rate=0.01, max_fallback_rate=0.05, max_p99_ms=50)


def test_probation_never_commits_on_too_little_evidence() -> None:
    few = Figures(predictions=20, errors=0, fallbacks=0, p99_ms=1.0)
    assert judge(few, None, LIM, 10).state == "wait"
    v = judge(few, None, LIM, 61)
    assert v.state == "inconclusive" and "fewer than the 100" in v.reason


def test_probation_passes_and_breaches_with_the_figure_and_margin() -> None:
    good = Figures(500, 1, 2, 3.0)
    assert judge(good, None, LIM, 61).state == "pass"
    assert judge(good, None, LIM, 10).state == "wait"
    slow = judge(Figures(500, 0, 0, 80.0), None, LIM, 10)  # a breach does not wait for the window
    assert slow.state == "breach" and "p99 80.000 ms is over max_p99_ms 50" in slow.reason
    assert "by 30.000" in slow.reason
    errs = judge(Figures(500, 25, 0, 3.0), None, LIM, 61)
    assert errs.state == "breach" and "error rate 0.0500" in errs.reason
    base = Figures(1000, 0, 0, 2.0)
    rel = judge(Figures(500, 0, 0, 9.0), base, LIM, 61)  # 4.5x and 7 ms more
    assert rel.state == "breach" and "previous version" in rel.reason and "max_p99_ratio 3.0x" in rel.reason
    assert judge(Figures(500, 0, 0, 5.5), base, LIM, 61).state == "pass"  # 2.75x: under the ratio
    tiny = Figures(1000, 0, 0, 0.25)
    assert judge(Figures(500, 0, 0, 1.7), tiny, LIM, 61).state == "pass"  # 6.8x but 1.45 ms: jitter, not a breach
    # fewer than 100 calls on either side: a "p99" is a maximum, not compared (40 ms is under max_p99_ms 50)
    assert judge(Figures(150, 0, 0, 40.0), Figures(50, 0, 0, 2.0), LIM, 61).state == "pass"

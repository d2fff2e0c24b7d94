"""`edge-runtime predict` and `info` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import run_cli


def test_predict_reads_csv_json_jsonl_npy_and_stdin(fake_artifact: Path, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "rows.json").write_text(json.dumps([{"a": 1, "b": 2}, {"a": 3, "b": 4}]))
    (tmp_path / "rows.jsonl").write_text('{"a": 1, "b": 2}\n{"a": 3, "b": 4}\n')
    np.save(tmp_path / "rows.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    for name in ("rows.csv", "rows.json", "rows.jsonl", "rows.npy"):
        r = run_cli("predict", str(fake_artifact), "--input", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        out = [json.loads(line) for line in r.stdout.splitlines()]
        assert [o["value"] for o in out] == [3.0, 7.0], name
        assert all(o["source"] == "model" and o["model_version"] == "1" for o in out)
    r = run_cli("predict", str(fake_artifact), "--input", "-", stdin=b'{"a": 0.5, "b": 0.5}')
    assert r.returncode == 0 and json.loads(r.stdout)["value"] == 1.0


def test_predict_bad_input_is_one_clear_line_and_exit_2(fake_artifact: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,c\n1,2\n")
    r = run_cli("predict", str(fake_artifact), "--input", str(tmp_path / "bad.csv"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "feature 'b'" in r.stderr and "missing" in r.stderr
    (tmp_path / "nan.csv").write_text("a,b\n1,abc\n")
    r = run_cli("predict", str(fake_artifact), "--input", str(tmp_path / "nan.csv"))
    assert r.returncode == 2 and "feature 'b'" in r.stderr and "'abc'" in r.stderr
    r = run_cli("predict", str(fake_artifact), "--input", str(tmp_path / "absent.csv"))
    assert r.returncode == 2 and "cannot read input file" in r.stderr


def test_info_verifies_and_exits_3_on_tampering(fake_artifact: Path) -> None:
    r = run_cli("info", str(fake_artifact))
    assert r.returncode == 0, r.stderr
    assert "(verified)" in r.stdout and "features" in r.stdout
    r = run_cli("info", str(fake_artifact), "--json")
    assert json.loads(r.stdout)["verified"] is True
    model = fake_artifact / "model.json"
    model.write_bytes(model.read_bytes().replace(b"1.0", b"9.0"))
    r = run_cli("info", str(fake_artifact))
    assert r.returncode == 3
    assert "sha256 mismatch" in r.stderr
    r = run_cli("predict", str(fake_artifact), "--input", "-", stdin=b'{"a": 1, "b": 1}')
    assert r.returncode == 3 and "sha256 mismatch" in r.stderr


def test_help_shows_an_example() -> None:
    for cmd in (["--help"], ["predict", "--help"], ["info", "--help"]):
        r = run_cli(*cmd)
        assert r.returncode == 0 and "example:" in r.stdout, cmd

"""edge-convert as a user runs it (python -m converters), and what the runtime CLI says about
artifacts that were damaged after conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_help_shows_an_example() -> None:
    r = run_cli("--help", module="converters")
    assert r.returncode == 0 and "example" in r.stdout and "--quantize" in r.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["models:/m/1", "--out", "x", "--quantize", "int3"], "invalid choice: 'int3'"),
    (["models:/m/1", "--quantize", "none"], "the following arguments are required: --out"),
    (["models:/m/1", "--out", "x", "--n-features", "four"], "invalid int value: 'four'"),
    (["ftp://host/model", "--out", "x"], "cannot resolve model source"),
    (["models:/m/1", "--out", "x", "--max-accuracy-drop", "2"], "--max-accuracy-drop 2.0 is out of range"),
])
def test_bad_input_is_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = run_cli(*args, module="converters")
    line = _one_line(r.stderr)
    assert needle in line and line.startswith("edge-convert")
    assert r.returncode == (4 if "resolve" in needle or "range" in needle else 2)


@pytest.fixture(scope="module")
def mlp_uri(store: Any, iris: Any) -> str:
    from sklearn.neural_network import MLPClassifier

    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0).fit(X, y)
    return store.log(est, X, serialization_format="cloudpickle")


@pytest.mark.slow
def test_convert_auto_through_cli(mlp_uri: str, store: Any, iris_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "iris-mlp"
    r = run_cli(mlp_uri, "--quantize", "auto", "--calibration-data", str(iris_csv), "--out", str(out),
                module="converters", env={"MLFLOW_TRACKING_URI": store.uri})
    assert r.returncode == 0, r.stderr
    for mode in ("none", "fp16", "dynamic", "static"):
        assert f"\n  {mode} " in r.stdout  # one table row per candidate, with its decision
    manifest = json.loads((out / "manifest.json").read_text())
    cands = manifest["quantization"]["candidates"]
    assert [c["mode"] for c in cands] == ["none", "fp16", "dynamic", "static"]
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["mode"] == manifest["quantization"]["mode"]
    kept = [c for c in cands if c["kept"]]
    assert chosen[0]["size_bytes"] == min(c["size_bytes"] for c in kept)
    assert all(c["reason"] for c in cands)
    assert manifest["parity"]["passed"] and manifest["parity"]["rows_source"] == "calibration-data"
    assert manifest["size_bytes"] == (out / "model.onnx").stat().st_size
    info = run_cli("info", str(out))
    assert info.returncode == 0 and "(verified)" in info.stdout


@pytest.mark.slow
def test_missing_signature_is_refused_with_exit_4(store: Any, iris: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (the exit-code mapping is the same ``main``): a subprocess would pay the
    imports of mlflow and the converters again for one refusal."""
    from sklearn.linear_model import LogisticRegression

    from converters.cli import main

    X, y = iris
    uri = store.log(LogisticRegression(max_iter=500).fit(X.to_numpy(), y), X.to_numpy(), example=False)
    assert main([uri, "--out", str(tmp_path / "a"), "--tracking-uri", store.uri]) == 4
    assert "--n-features N or --sample-data FILE" in _one_line(capsys.readouterr().err)


# -- the runtime's view of a damaged artifact (exit 3 integrity, 2 input) ------------------------
@pytest.fixture
def artifact(iris_artifact: Path, tmp_path: Path) -> Path:
    d = tmp_path / "iris"
    shutil.copytree(iris_artifact, d)
    return d


def test_edited_manifest_exit_3(artifact: Path) -> None:
    m = json.loads((artifact / "manifest.json").read_text())
    m["sha256"] = "0" * 64
    (artifact / "manifest.json").write_text(json.dumps(m))
    for args in (("info", str(artifact)), ("predict", str(artifact), "--input", "-")):
        r = run_cli(*args, stdin=b"[5.1, 3.5, 1.4, 0.2]")
        assert r.returncode == 3 and "sha256 mismatch" in _one_line(r.stderr)


def test_truncated_model_exit_3(artifact: Path) -> None:
    f = artifact / "model.onnx"
    f.write_bytes(f.read_bytes()[:100])
    r = run_cli("info", str(artifact))
    assert r.returncode == 3 and "size mismatch" in _one_line(r.stderr)


@pytest.mark.parametrize(("row", "needle"), [
    ({"sepal length": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2},
     "feature 'sepal length (cm)': missing"),
    ({"sepal length (cm)": float("nan"), "sepal width (cm)": 3.5, "petal length (cm)": 1.4,
      "petal width (cm)": 0.2}, "feature 'sepal length (cm)': expected a finite number"),
])
def test_bad_rows_exit_2(row: dict[str, float], needle: str, iris_artifact: Path) -> None:
    r = run_cli("predict", str(iris_artifact), "--input", "-", stdin=json.dumps(row).encode())
    assert r.returncode == 2 and needle in _one_line(r.stderr)
    good = {k.replace("sepal length", "sepal length (cm)") if k == "sepal length" else k: 1.0 for k in row}
    ok = run_cli("predict", str(iris_artifact), "--input", "-", stdin=json.dumps(good).encode())
    assert ok.returncode == 0 and json.loads(ok.stdout)["source"] == "model"

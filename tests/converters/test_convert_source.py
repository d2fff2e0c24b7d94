"""SOURCE resolution: runs:/, models:/name/version, models:/name@alias, local directories;
models without a signature; unknown or broken sources fail with one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import ConversionError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(store: Any, iris: Any) -> tuple[str, Any]:
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    est = LogisticRegression(max_iter=1000).fit(X, y)
    store.log(est, X, register="iris-clf")
    MlflowClient(store.uri).set_registered_model_alias("iris-clf", "champion", "1")
    return "iris-clf", est


@pytest.fixture(scope="module")
def unsigned(store: Any, iris: Any) -> tuple[str, Any]:
    """Fitted on a bare array and logged without example or signature: features unknown."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    est = LogisticRegression(max_iter=1000).fit(X.to_numpy(), y)
    return store.log(est, X.to_numpy(), example=False), est


def _convert(uri: str, out: Path, store: Any, **kw: Any) -> Any:
    import converters

    return converters.convert(uri, quantize="none", out=out, tracking_uri=store.uri, **kw)


@pytest.mark.parametrize("ref", ["models:/iris-clf/1", "models:/iris-clf@champion"])
def test_registered_model(ref: str, registered: Any, store: Any, iris: Any, iris_csv: Path, tmp_path: Path) -> None:
    report = _convert(ref, tmp_path / "a", store, calibration_data=iris_csv)
    m = report.manifest
    assert (m.name, m.version) == ("iris-clf", "1")
    assert m.source["uri"] == ref and m.source["registered_model"] == {"name": "iris-clf", "version": "1"}
    assert m.source["run_id"] and m.created_at.endswith("Z")
    X, _ = iris
    got = [p.value for p in edge_runtime.load(report.out).predict_batch(X)]
    assert got == list(registered[1].predict(X))


def test_local_directory_and_overrides(iris: Any, tmp_path: Path) -> None:
    import mlflow.sklearn
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    est = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    mlflow.sklearn.save_model(est, str(tmp_path / "saved"), input_example=X.iloc[:5], pip_requirements=[],
                              serialization_format="cloudpickle")
    import converters

    report = converters.convert(tmp_path / "saved", out=tmp_path / "art", name="irises", version="7")
    assert (report.manifest.name, report.manifest.version) == ("irises", "7")
    assert report.parity["rows_source"] == "input-example+synthetic" and report.notes  # says rows were synthesized
    assert edge_runtime.load(report.out).predict(X.iloc[0].to_dict()).value == est.predict(X.iloc[:1])[0]


def test_missing_signature_says_what_to_pass(unsigned: Any, store: Any, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"without a signature.*--n-features N or --sample-data FILE"):
        _convert(unsigned[0], tmp_path / "a", store)
    assert not (tmp_path / "a").exists()


def test_missing_signature_with_n_features(unsigned: Any, store: Any, iris: Any, tmp_path: Path) -> None:
    report = _convert(unsigned[0], tmp_path / "a", store, n_features=4)
    assert report.manifest.feature_names == ("x0", "x1", "x2", "x3")
    assert report.parity["rows_source"] == "synthetic" and report.parity["passed"]
    X = iris[0].to_numpy()
    got = [p.value for p in edge_runtime.load(report.out).predict_batch(X)]
    assert got == list(unsigned[1].predict(X))
    with pytest.raises(ConversionError, match="--n-features 5 does not match the model, which takes 4"):
        _convert(unsigned[0], tmp_path / "b", store, n_features=5)


def test_missing_signature_with_sample_data(unsigned: Any, store: Any, iris: Any, tmp_path: Path) -> None:
    sample = tmp_path / "sample.npy"
    np.save(sample, iris[0].to_numpy()[::3])
    report = _convert(unsigned[0], tmp_path / "a", store, sample_data=sample)
    assert report.parity["rows_source"] == "sample-data" and report.parity["rows"] == 25
    assert report.manifest.reference["rows"] == 25


@pytest.mark.parametrize(("uri", "message"), [
    ("ftp://host/model", "cannot resolve model source 'ftp://host/model'"),
    ("runs:/0123456789abcdef0123456789abcdef/model", "not found in tracking store"),
    ("models:/no-such-model/1", "not found in tracking store"),
    ("models:/iris-clf@no-such-alias", "not found in tracking store"),
    ("/nonexistent/model/dir", "no such model directory"),
])
def test_unknown_source(uri: str, message: str, registered: Any, store: Any, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=message) as info:
        _convert(uri, tmp_path / "a", store)
    assert "\n" not in str(info.value)


def test_directory_without_mlmodel(tmp_path: Path, store: Any) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="has no MLmodel file"):
        _convert(str(tmp_path / "empty"), tmp_path / "a", store)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_model_file(damage: str, registered: Any, store: Any, tmp_path: Path) -> None:
    import mlflow.artifacts

    src = Path(mlflow.artifacts.download_artifacts("models:/iris-clf/1", dst_path=str(tmp_path / "dl"),
                                                  tracking_uri=store.uri))
    local = tmp_path / "model"
    shutil.copytree(src, local)
    f = local / "model.skops"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00not a model" * 50)
    with pytest.raises(ConversionError, match=r"cannot load the scikit-learn model .* corrupted or truncated"):
        _convert(str(local), tmp_path / "a", store)

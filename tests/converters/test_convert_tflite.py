"""Keras (MLP on iris, CNN on load_digits images) and dense scikit-learn models -> TFLite in every
quantization mode, and Keras -> ONNX: each trained here, logged to a real MLflow store, converted,
loaded with edge_runtime.load and compared with the source model through the public API."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("needs edge-convert[tflite] and edge-runtime[tflite] (tensorflow, ai-edge-litert)",
                allow_module_level=True)

pytestmark = pytest.mark.slow

# int8 may flip a row or two of a tiny model; the gate is told so explicitly
INT8_DROP = 0.05


def _log_keras(store: Any, model: Any, X: np.ndarray) -> str:
    import mlflow
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.tensorflow.log_model(model, name="model", pip_requirements=[],
                                    signature=infer_signature(X[:5], model.predict(X[:5], verbose=0)))
    return f"runs:/{run.info.run_id}/model"


@pytest.fixture(scope="module")
def keras_mlp(store: Any, tmp_path_factory: pytest.TempPathFactory, keras_iris_mlp: dict[str, Any]) -> dict[str, Any]:
    model, X = keras_iris_mlp["model"], keras_iris_mlp["X"]
    csv = tmp_path_factory.mktemp("keras") / "iris.csv"
    np.savetxt(csv, X, delimiter=",", header=",".join(f"x{i}" for i in range(4)), comments="")
    return {"uri": _log_keras(store, model, X), "X": X, "proba": keras_iris_mlp["proba"], "csv": csv}


@pytest.fixture(scope="module")
def keras_cnn(store: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    for _ in range(40):
        model.train_on_batch(images, digits.target)
    flat = images.reshape(len(images), -1)
    csv = tmp_path_factory.mktemp("cnn") / "digits.csv"
    np.savetxt(csv, flat[::3], delimiter=",", header=",".join(f"x{i}" for i in range(64)), comments="")
    return {"uri": _log_keras(store, model, images), "X": flat, "proba": model.predict(images, verbose=0),
            "csv": csv}


def _convert(store: Any, uri: str, out: Path, fmt: str, mode: str, csv: Path, **kw: Any) -> Any:
    import converters

    return converters.convert(uri, format=fmt, quantize=mode, out=out, calibration_data=csv,
                              tracking_uri=store.uri, version="1", **kw)


def _check_classifier(out: Path, X: np.ndarray, proba: np.ndarray, min_agree: float, atol: float) -> None:
    """The artifact, through edge_runtime's public API, against the source model's probabilities."""
    with edge_runtime.load(out) as rt:
        preds = rt.predict_batch(X)
        classes = list(rt.manifest.classes)
        got = np.array([[p.probabilities[c] for c in classes] for p in preds])
        labels = np.array([p.value for p in preds])
        one = rt.predict(X[0])
    agree = float((labels == proba.argmax(1)).mean())
    assert agree >= min_agree, agree
    assert np.abs(got - proba).max() <= atol, np.abs(got - proba).max()
    assert one.source == "model" and one.value == labels[0]


@pytest.mark.parametrize(("fmt", "mode", "int8_io", "min_agree", "atol"), [
    ("tflite", "none", False, 1.0, 1e-5),
    ("tflite", "fp16", False, 1.0, 5e-3),
    ("tflite", "dynamic", False, 1.0, 5e-2),
    ("tflite", "static", False, 0.95, 0.2),
    ("tflite", "static", True, 0.95, 0.2),
    ("onnx", "none", False, 1.0, 1e-5),
    ("onnx", "dynamic", False, 0.97, 5e-2),
])
def test_keras_mlp(fmt: str, mode: str, int8_io: bool, min_agree: float, atol: float, keras_mlp: Any,
                   store: Any, tmp_path: Path) -> None:
    report = _convert(store, keras_mlp["uri"], tmp_path / "a", fmt, mode, keras_mlp["csv"],
                      max_accuracy_drop=INT8_DROP, tflite_int8_io=int8_io)
    m = report.manifest
    assert (m.backend, m.file) == ((fmt, "model.tflite") if fmt == "tflite" else (fmt, "model.onnx"))
    assert m.quantization["mode"] == mode and report.parity["passed"]
    assert m.task == "classification" and m.classes == (0, 1, 2) and m.feature_names == ("x0", "x1", "x2", "x3")
    assert m.source["flavor"] == "tensorflow"
    if fmt == "tflite":
        assert "ai-edge-litert" in m.requires
        notes = " ".join(m.quantization.get("notes", []))
        if mode == "dynamic":
            assert "tflite-runtime 2.14 cannot load" in notes
        if mode == "static":
            assert m.quantization["calibration_rows"] > 0
            assert ("int8 inputs/outputs" if int8_io else "float32 inputs/outputs") in notes
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_path=str(report.out / "model.tflite"))
            want = np.int8 if int8_io else np.float32
            assert it.get_input_details()[0]["dtype"] == want and it.get_output_details()[0]["dtype"] == want
    else:
        assert "onnxruntime" in m.requires and "tf2onnx" in m.source["libraries"]
    _check_classifier(report.out, keras_mlp["X"], keras_mlp["proba"], min_agree, atol)


def test_keras_mlp_auto_records_every_candidate(keras_mlp: Any, store: Any, tmp_path: Path) -> None:
    report = _convert(store, keras_mlp["uri"], tmp_path / "auto", "tflite", "auto", keras_mlp["csv"],
                      max_accuracy_drop=INT8_DROP)
    cands = {c["mode"]: c for c in report.manifest.quantization["candidates"]}
    assert set(cands) == {"none", "fp16", "dynamic", "static"}
    assert sum(c["chosen"] for c in cands.values()) == 1 and cands[report.mode]["chosen"]
    assert all(c["reason"] for c in cands.values())
    _check_classifier(report.out, keras_mlp["X"], keras_mlp["proba"], 0.95, 0.2)


@pytest.mark.parametrize(("fmt", "mode"), [("tflite", "none"), ("tflite", "static"), ("onnx", "none")])
def test_keras_cnn_on_digit_images(fmt: str, mode: str, keras_cnn: Any, store: Any, tmp_path: Path) -> None:
    report = _convert(store, keras_cnn["uri"], tmp_path / "cnn", fmt, mode, keras_cnn["csv"],
                      max_accuracy_drop=INT8_DROP)
    m = report.manifest
    assert m.n_features == 64 and m.inputs[0].shape == (None, 64)  # flat rows; the graph reshapes
    assert m.classes == tuple(range(10))
    exact = mode == "none"
    _check_classifier(report.out, keras_cnn["X"], keras_cnn["proba"], 1.0 if exact else 0.95,
                      1e-4 if exact else 0.3)


# -- scikit-learn dense algebra -> TFLite ------------------------------------------------------
def _sk_models() -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "mlp": make_pipeline(MinMaxScaler(), MLPClassifier((16,), max_iter=2000, random_state=0)),
        "binary": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "ridge": make_pipeline(StandardScaler(), Ridge()),
    }


@pytest.fixture(scope="module")
def sk_logged(store: Any, iris: Any, diabetes: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer(as_frame=True)
    data = {"logistic": iris, "mlp": iris, "binary": (cancer.data, cancer.target), "ridge": diabetes}
    out: dict[str, Any] = {}
    d = tmp_path_factory.mktemp("sk")
    for kind, est in _sk_models().items():
        X, y = data[kind]
        X = X.rename(columns=lambda c: c.replace(" ", "_").replace("(", "").replace(")", ""))
        est.fit(X, y)
        csv = d / f"{kind}.csv"
        X.to_csv(csv, index=False)
        out[kind] = (store.log(est, X, serialization_format="cloudpickle"), est, X, csv)
    return out


@pytest.mark.parametrize(("kind", "mode"), [("logistic", "none"), ("logistic", "static"), ("mlp", "none"),
                                            ("binary", "none"), ("ridge", "none"),
                                            ("ridge", "fp16")])
def test_sklearn_dense_to_tflite(kind: str, mode: str, sk_logged: Any, store: Any, tmp_path: Path) -> None:
    uri, est, X, csv = sk_logged[kind]
    report = _convert(store, uri, tmp_path / kind, "tflite", mode, csv, max_accuracy_drop=INT8_DROP)
    assert report.manifest.backend == "tflite" and report.manifest.quantization["mode"] == mode
    with edge_runtime.load(report.out) as rt:
        preds = rt.predict_batch(X)
        by_name = rt.predict(X.iloc[3].to_dict())
    got = np.array([p.value for p in preds])
    if kind == "ridge":
        want = est.predict(X)
        rel = np.abs(got - want).max() / want.std()
        assert rel <= (1e-4 if mode == "none" else 1e-2), rel
        assert by_name.value == pytest.approx(want[3], rel=1e-3)
        return
    agree = float((got == est.predict(X)).mean())
    assert agree >= (1.0 if mode == "none" else 0.95), agree
    proba = np.array([[p.probabilities[c] for c in report.manifest.classes] for p in preds])
    assert np.abs(proba - est.predict_proba(X)).max() <= (1e-4 if mode == "none" else 0.2)
    assert by_name.value == got[3]


def test_sklearn_tree_to_tflite_says_use_onnx(store: Any, iris: Any, iris_csv: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from converters.cli import main

    X, y = iris
    uri = store.log(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), X,
                    skops_trusted_types=["sklearn.tree._tree.Tree"])
    code = main([uri, "--format", "tflite", "--calibration-data", str(iris_csv), "--out", str(tmp_path / "rf"),
                 "--tracking-uri", store.uri])
    err = capsys.readouterr().err
    assert code == 4, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert "TFLite cannot express scikit-learn RandomForestClassifier" in line
    assert "--format onnx" in line and "LogisticRegression" in line  # what is supported
    assert not (tmp_path / "rf").exists()

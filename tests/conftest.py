"""Fixtures shared by every test module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, module: str = "edge_runtime", stdin: bytes | None = None,
            env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` from a clean process, as a user would run the command."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture
def cli():
    return run_cli


def write_fake_artifact(d: Path, *, task: str = "regression", weights: list[list[float]] | None = None,
                        features: tuple[str, ...] = ("a", "b"), version: str = "1",
                        **manifest: Any) -> Path:
    """An artifact for the library-free ``fake`` backend: y = x @ W + b."""
    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest

    d.mkdir(parents=True, exist_ok=True)
    weights = weights or [[1.0] for _ in features]
    n_out = len(weights[0])
    softmax = task == "classification"
    (d / "model.json").write_text(json.dumps({"weights": weights, "input": "x", "softmax": softmax,
                                               "outputs": ["probabilities" if softmax else "value"]}))
    role = "probabilities" if softmax else "value"
    m = Manifest(
        name=manifest.pop("name", "fake"), version=version, backend="fake", file="model.json",
        sha256=sha256_file(d / "model.json"), size_bytes=(d / "model.json").stat().st_size, task=task,
        inputs=(TensorSpec("x", "float32", (None, len(features))),),
        outputs=(TensorSpec("probabilities" if softmax else "value", "float32", (None, n_out), role),),
        feature_names=tuple(features), feature_types=tuple("float" for _ in features),
        classes=tuple(range(n_out)) if softmax else None, **manifest,
    )
    write_manifest(d, m)
    return d


@pytest.fixture
def fake_artifact(tmp_path: Path) -> Path:
    return write_fake_artifact(tmp_path / "fake")


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A real Mosquitto on a free port (persistence on), killed at teardown. ``.kill()`` is
    kill -9, ``.start()`` brings it back on the same port. See tests/mqtt_broker.py."""
    from tests.mqtt_broker import MOSQUITTO, Broker

    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto is not installed at {MOSQUITTO} (apt-get install mosquitto)")
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


# -- real converted artifacts (converters' fixtures; built once per session and worker) ----------
def _convert_sklearn_fixture(root: Path, name: str, estimator: Any, frame: Any, target: Any) -> Path:
    """Fit ``estimator`` on a bundled data set, save it as an MLflow model, convert it (quantize none)."""
    import mlflow.sklearn

    import converters

    estimator.fit(frame, target)
    model_dir = root / f"{name}-mlflow"
    mlflow.sklearn.save_model(estimator, str(model_dir), input_example=frame.iloc[:5], pip_requirements=[])
    rows = root / f"{name}.csv"
    frame.to_csv(rows, index=False)
    report = converters.convert(model_dir, format="onnx", quantize="none", out=root / name, calibration_data=rows,
                                name=name, version="1")
    return report.out


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX artifact: logistic regression on iris (4 named float features, classes 0/1/2)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    return _convert_sklearn_fixture(tmp_path_factory.mktemp("iris"), "iris", LogisticRegression(max_iter=1000), X, y)


@pytest.fixture(scope="session")
def regression_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX artifact: linear regression on diabetes (10 named float features)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return _convert_sklearn_fixture(tmp_path_factory.mktemp("diabetes"), "diabetes", LinearRegression(), X, y)


@pytest.fixture(scope="session")
def keras_iris_mlp() -> dict[str, Any]:
    """One Keras MLP (normalization, 16 relu, softmax) trained on iris, once per session and
    worker, for every test that needs a Keras source model: the LiteRT backend, the TFLite
    converters and bench."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    model = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    for _ in range(60):  # full-batch steps: Keras' fit() costs far more per epoch on 150 rows
        model.train_on_batch(X, y)
    return {"model": model, "X": X, "y": y, "proba": model.predict(X, verbose=0)}

"""A real MLflow tracking store (sqlite, one per test session and worker: creating its tables
takes ~10 s) and helpers to log models into it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass
class Store:
    uri: str
    experiment_id: str
    root: Path

    def log(self, estimator: Any, X: Any, *, name: str = "model", example: bool = True,
            register: str | None = None, **kwargs: Any) -> str:
        """Log a fitted estimator in a new run; returns its ``runs:/<id>/<name>`` URI."""
        import mlflow
        import mlflow.sklearn

        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(experiment_id=self.experiment_id) as run:
            mlflow.sklearn.log_model(estimator, name=name, input_example=X[:5] if example else None,
                                     pip_requirements=[], registered_model_name=register, **kwargs)
        return f"runs:/{run.info.run_id}/{name}"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("converter-tests", artifact_location=(root / "artifacts").as_uri())
    return Store(uri, exp, root)


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def diabetes() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def iris_csv(tmp_path_factory: pytest.TempPathFactory, iris: tuple[Any, Any]) -> Path:
    p = tmp_path_factory.mktemp("data") / "iris.csv"
    iris[0].assign(species=iris[1]).to_csv(p, index=False)  # an extra label column is ignored
    return p


@pytest.fixture(scope="session")
def diabetes_csv(tmp_path_factory: pytest.TempPathFactory, diabetes: tuple[Any, Any]) -> Path:
    p = tmp_path_factory.mktemp("data") / "diabetes.csv"
    diabetes[0].to_csv(p, index=False)
    return p

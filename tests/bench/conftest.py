"""Real ONNX artifacts for the bench tests, built once per test session even under xdist:
the first worker builds them under a file lock, the others reuse the directory."""

from __future__ import annotations

import fcntl
import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"fp32", "int8": iris MLP (64-32) artifacts; "regression": linear regression on diabetes;
    "noref": the same without reference histograms}."""
    from scripts.bench_artifacts import diabetes_linear_artifact, iris_mlp_artifacts

    root = tmp_path_factory.getbasetemp().parent / "bench-artifacts"  # shared by xdist workers
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".done"
        if not done.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                iris_mlp_artifacts(root, ("fp32", "int8"))
                diabetes_linear_artifact(root)
                diabetes_linear_artifact(root, reference=False)
            done.touch()
    return {"fp32": root / "iris-fp32", "int8": root / "iris-int8", "regression": root / "diabetes",
            "noref": root / "diabetes-noref"}


@pytest.fixture(scope="session")
def iris_rows() -> tuple[list[list[float]], list[int]]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.tolist(), data.target.tolist()

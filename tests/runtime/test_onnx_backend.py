"""The ONNX Runtime backend gives exactly what onnxruntime's public API gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import BackendOptions, open_backend
from edge_runtime.errors import BackendError, ModelLoadError


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    skl2onnx = pytest.importorskip("skl2onnx", reason="edge-convert (skl2onnx) builds the test model")
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    clf = MLPClassifier((16,), max_iter=300, random_state=0).fit(X, y)
    onx = skl2onnx.to_onnx(clf, X[:1], options={"zipmap": False})
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, X


def test_backend_matches_public_inference_session(mlp_onnx) -> None:
    import onnxruntime as ort

    path, X = mlp_onnx
    be = open_backend("onnx", path, BackendOptions(threads=1))
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = be.inputs()[0].name
    assert [o.name for o in be.outputs()] == [o.name for o in ref.get_outputs()]
    for rows in (X[:1], X[:7], X):
        got = be.run({name: rows})
        want = ref.run(None, {name: rows})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    be.close()


def test_backend_errors_are_translated(mlp_onnx, tmp_path: Path) -> None:
    path, X = mlp_onnx
    be = open_backend("onnx", path)
    with pytest.raises(BackendError, match="onnx backend failed"):
        be.run({be.inputs()[0].name: X[:2, :3]})  # wrong width reaches onnxruntime
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot open the model"):
        open_backend("onnx", bad)
    with pytest.raises(ModelLoadError, match="unknown backend 'tensorrt'"):
        open_backend("tensorrt", path)

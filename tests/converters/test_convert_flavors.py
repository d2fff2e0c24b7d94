"""PyTorch, XGBoost, LightGBM and ONNX flavors -> ONNX: each model trained here on a bundled data
set, logged to a real MLflow store, converted, loaded with edge_runtime.load and compared with
the source model through the public API."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import ConversionError, UnsupportedModel

pytestmark = pytest.mark.slow


def _log(store: Any, flavor: str, model: Any, **kw: Any) -> str:
    import importlib

    import mlflow

    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        importlib.import_module(f"mlflow.{flavor}").log_model(model, name="model", pip_requirements=[], **kw)
    return f"runs:/{run.info.run_id}/model"


def _convert(store: Any, uri: str, out: Path, mode: str, csv: Path, **kw: Any) -> Any:
    import converters

    return converters.convert(uri, format="onnx", quantize=mode, out=out, calibration_data=csv,
                              tracking_uri=store.uri, version="1", **kw)


def _labels_and_proba(out: Path, X: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
    with edge_runtime.load(out) as rt:
        preds = rt.predict_batch(X)
        classes = rt.manifest.classes
        proba = None
        if preds[0].probabilities is not None:
            proba = np.array([[p.probabilities[c] for c in classes] for p in preds])
        return np.array([p.value for p in preds]), proba, rt.manifest


# -- PyTorch ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_mlp(store: Any, iris: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch (edge-convert[torch]) is not installed")
    import torch

    X = iris[0].to_numpy(dtype=np.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.from_numpy(iris[1].to_numpy())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3),
                              torch.nn.Softmax(dim=1))
    opt = torch.optim.Adam(net.parameters(), 0.05)
    xt = torch.from_numpy(X)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(net(xt) + 1e-9), y).backward()
        opt.step()
    with torch.no_grad():
        proba = net(xt).numpy()
    csv = tmp_path_factory.mktemp("torch") / "rows.csv"
    np.savetxt(csv, X, delimiter=",", header=",".join(f"x{i}" for i in range(4)), comments="")
    # the input shape comes from the input example (MLflow infers a [-1, 4] tensor signature)
    return {"uri": _log(store, "pytorch", net, input_example=X[:3]), "X": X, "proba": proba, "csv": csv}


@pytest.mark.parametrize(("mode", "min_agree", "atol"), [("none", 1.0, 1e-5), ("dynamic", 0.97, 0.05),
                                                         ("fp16", 1.0, 5e-3)])
def test_pytorch_mlp(mode: str, min_agree: float, atol: float, torch_mlp: Any, store: Any, tmp_path: Path) -> None:
    report = _convert(store, torch_mlp["uri"], tmp_path / mode, mode, torch_mlp["csv"], max_accuracy_drop=0.05)
    labels, proba, m = _labels_and_proba(report.out, torch_mlp["X"])
    assert m.source["flavor"] == "pytorch" and m.quantization["mode"] == mode and report.parity["passed"]
    assert m.classes == (0, 1, 2) and m.inputs[0].shape == (None, 4)
    assert (labels == torch_mlp["proba"].argmax(1)).mean() >= min_agree
    assert proba is not None and np.abs(proba - torch_mlp["proba"]).max() <= atol
    import onnx

    model = onnx.load(str(report.out / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


# -- XGBoost / LightGBM ----------------------------------------------------------------------
_BOOSTERS = {
    ("xgboost", "cls"): lambda: __import__("xgboost").XGBClassifier(n_estimators=20, max_depth=3),
    ("xgboost", "reg"): lambda: __import__("xgboost").XGBRegressor(n_estimators=20, max_depth=3),
    ("lightgbm", "cls"): lambda: __import__("lightgbm").LGBMClassifier(n_estimators=20, verbose=-1),
    ("lightgbm", "reg"): lambda: __import__("lightgbm").LGBMRegressor(n_estimators=20, verbose=-1),
}


@pytest.mark.parametrize(("library", "task"), list(_BOOSTERS))
def test_boosters(library: str, task: str, store: Any, iris: Any, diabetes: Any, iris_csv: Path,
                  diabetes_csv: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} (edge-convert[boost]) is not installed")
    X, y = iris if task == "cls" else diabetes
    est = _BOOSTERS[library, task]().fit(X, y)
    uri = _log(store, library, est, input_example=X.iloc[:5])
    csv = iris_csv if task == "cls" else diabetes_csv
    report = _convert(store, uri, tmp_path / "fp32", "none", csv)
    labels, proba, m = _labels_and_proba(report.out, X)
    assert m.source["flavor"] == library and report.parity["passed"]
    assert m.feature_names == tuple(X.columns)
    if task == "cls":
        assert (labels == est.predict(X)).all()
        assert proba is not None and np.abs(proba - est.predict_proba(X)).max() < 1e-5
    else:
        want = est.predict(X)
        assert np.abs(labels - want).max() <= 1e-4 * np.abs(want).max()
    # never int8: a moved threshold changes predictions
    with pytest.raises(ConversionError, match="tree ensembles are never int8-quantized"):
        _convert(store, uri, tmp_path / "int8", "dynamic", csv)


# -- ONNX flavor -----------------------------------------------------------------------------
def test_onnx_flavor_passes_through_and_quantizes(torch_mlp: Any, store: Any, tmp_path: Path) -> None:
    import torch

    # an ONNX model a user exported themselves, logged with mlflow.onnx
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3), torch.nn.Softmax(dim=1))
    torch.manual_seed(1)
    path = tmp_path / "user.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 4),), str(path), input_names=["x"], output_names=["p"],
                      dynamic_axes={"x": {0: "n"}, "p": {0: "n"}}, opset_version=17, dynamo=False)
    import onnx
    import onnxruntime as ort

    uri = _log(store, "onnx", onnx.load(str(path)), input_example=torch_mlp["X"][:3])
    want = ort.InferenceSession(str(path)).run(None, {"x": torch_mlp["X"]})[0]
    for mode, atol in (("none", 1e-5), ("dynamic", 0.05)):
        report = _convert(store, uri, tmp_path / mode, mode, torch_mlp["csv"], max_accuracy_drop=0.05)
        labels, proba, m = _labels_and_proba(report.out, torch_mlp["X"])
        assert m.source["flavor"] == "onnx" and m.task == "classification" and m.classes == (0, 1, 2)
        assert proba is not None and np.abs(proba - want).max() <= atol
        assert (labels == want.argmax(1)).mean() >= (1.0 if mode == "none" else 0.97)


def test_onnx_flavor_of_a_skl2onnx_classifier_keeps_its_labels(store: Any, iris: Any, tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    lr = LogisticRegression(max_iter=1000).fit(X.to_numpy(np.float32), y + 10)  # labels 10, 11, 12
    onx = to_onnx(lr, X.to_numpy(np.float32)[:1], options={"zipmap": False})
    uri = _log(store, "onnx", onx, input_example=X.to_numpy(np.float32)[:3])
    csv = tmp_path / "rows.csv"
    X.set_axis([f"x{i}" for i in range(4)], axis=1).to_csv(csv, index=False)  # a tensor signature: x0..x3
    report = _convert(store, uri, tmp_path / "lr", "none", csv)
    labels, proba, m = _labels_and_proba(report.out, X.to_numpy(np.float32))
    assert m.classes == (10, 11, 12) and (labels == lr.predict(X.to_numpy(np.float32))).all()
    assert proba is not None and np.abs(proba - lr.predict_proba(X.to_numpy(np.float32))).max() < 1e-5


# -- unsupported -----------------------------------------------------------------------------
def test_unsupported_flavor_fails_at_once_with_the_list(store: Any, tmp_path: Path) -> None:
    import mlflow
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: Any) -> Any:
            return model_input

    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
    with pytest.raises(UnsupportedModel) as info:
        _convert(store, f"runs:/{run.info.run_id}/model", tmp_path / "x", "none", tmp_path / "none.csv")
    msg = str(info.value)
    for flavor in ("keras", "lightgbm", "onnx", "pytorch", "sklearn", "tensorflow", "xgboost"):
        assert flavor in msg

"""Every supported scikit-learn estimator kind, converted from a real MLflow store and checked
through the public runtime API against the sklearn model itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import ConversionError

pytestmark = pytest.mark.slow


def _classifiers() -> dict[str, Any]:
    from sklearn import ensemble, linear_model, neighbors, neural_network, svm, tree

    return {
        "logistic": linear_model.LogisticRegression(max_iter=1000),
        "svc": svm.SVC(probability=True, random_state=0),
        "linear_svc": svm.LinearSVC(),
        "knn": neighbors.KNeighborsClassifier(),
        "tree": tree.DecisionTreeClassifier(random_state=0),
        "forest": ensemble.RandomForestClassifier(n_estimators=20, random_state=0),
        "gboost": ensemble.GradientBoostingClassifier(n_estimators=20, random_state=0),
        "hist_gboost": ensemble.HistGradientBoostingClassifier(max_iter=20, random_state=0),
        "mlp": neural_network.MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0),
    }


def _regressors() -> dict[str, Any]:
    from sklearn import ensemble, linear_model, neighbors, neural_network, svm, tree

    return {
        "linear": linear_model.LinearRegression(),
        "ridge": linear_model.Ridge(),
        "svr": svm.SVR(),
        "knn": neighbors.KNeighborsRegressor(),
        "tree": tree.DecisionTreeRegressor(random_state=0, max_depth=6),
        "forest": ensemble.RandomForestRegressor(n_estimators=20, random_state=0, max_depth=6),
        "gboost": ensemble.GradientBoostingRegressor(n_estimators=30, random_state=0),
        "hist_gboost": ensemble.HistGradientBoostingRegressor(max_iter=30, random_state=0),
        "mlp": neural_network.MLPRegressor(hidden_layer_sizes=(16,), max_iter=3000, random_state=0,
                                           learning_rate_init=0.01),
    }


# models skops does not trust by default are logged the other way MLflow allows
_TREE = ["sklearn.tree._tree.Tree"]
_SKOPS_TRUST = {"hist_gboost": ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
                "tree": _TREE, "forest": _TREE, "gboost": _TREE}
_CLOUDPICKLE = {"mlp", "knn"}


def _log(store: Any, kind: str, est: Any, X: Any) -> str:
    if kind in _CLOUDPICKLE:
        return store.log(est, X, serialization_format="cloudpickle")
    return store.log(est, X, skops_trusted_types=_SKOPS_TRUST.get(kind))


class _Logged(dict):  # type: ignore[type-arg]
    """(task, kind) -> (uri, fitted estimator); each estimator is fitted and logged once, on first use."""

    def __init__(self, store: Any, iris: Any, diabetes: Any) -> None:
        super().__init__()
        self.store, self.data = store, {"cls": iris, "reg": diabetes}

    def __missing__(self, key: tuple[str, str]) -> tuple[str, Any]:
        task, kind = key
        est = (_classifiers() if task == "cls" else _regressors())[kind]
        X, y = self.data[task]
        est.fit(X, y)
        self[key] = (_log(self.store, kind, est, X), est)
        return self[key]


@pytest.fixture(scope="module")
def logged(store: Any, iris: Any, diabetes: Any) -> _Logged:
    return _Logged(store, iris, diabetes)


def convert(store: Any, uri: str, out: Path, mode: str, data: Path, **kw: Any) -> Any:
    import converters

    return converters.convert(uri, format="onnx", quantize=mode, out=out, calibration_data=data,
                              tracking_uri=store.uri, **kw)


@pytest.mark.parametrize("kind", list(_classifiers()))
def test_classifier_none(kind: str, logged: Any, store: Any, iris: Any, iris_csv: Path, tmp_path: Path) -> None:
    uri, est = logged["cls", kind]
    report = convert(store, uri, tmp_path / kind, "none", iris_csv)
    X, _ = iris
    rt = edge_runtime.load(report.out)
    preds = rt.predict_batch(X)
    got = np.array([p.value for p in preds])
    agreement = float((got == est.predict(X)).mean())
    # kNN ties at float32 distances may flip a rare row; every other kind matches exactly
    assert agreement >= (0.98 if kind == "knn" else 1.0), agreement
    m = report.manifest
    assert m.classes == (0, 1, 2) and m.output("label") is not None
    if hasattr(est, "predict_proba"):
        proba = np.array([[p.probabilities[c] for c in m.classes] for p in preds])
        tol = 0.25 if kind == "knn" else 1e-4
        assert np.abs(proba - est.predict_proba(X)).max() <= tol
        assert m.output("probabilities") is not None and len(m.smoke["probabilities"]) == 5
    else:
        assert m.output("probabilities") is None and preds[0].probabilities is None
    assert report.parity["passed"] and report.parity["rows"] > 0
    assert m.source["model_class"] == type(est).__name__ and m.source["libraries"]["skl2onnx"]
    assert m.feature_names == tuple(X.columns) and m.input_layout == "tensor"


@pytest.mark.parametrize("kind", list(_regressors()))
def test_regressor_none(kind: str, logged: Any, store: Any, diabetes: Any, diabetes_csv: Path,
                        tmp_path: Path) -> None:
    uri, est = logged["reg", kind]
    report = convert(store, uri, tmp_path / kind, "none", diabetes_csv)
    X, _ = diabetes
    rt = edge_runtime.load(report.out)
    got = np.array([p.value for p in rt.predict_batch(X)])
    want = est.predict(X)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    m = report.manifest
    assert m.task == "regression" and m.output("value") is not None and m.classes is None
    assert report.parity["passed"] and report.parity["max_abs_diff"] < 1e-2
    assert m.reference["prediction"]["kind"] == "numeric" and len(m.reference["prediction"]["edges"]) >= 2
    if kind == "hist_gboost":
        assert set(m.extra["missing_ok"]) == set(X.columns)  # HGB takes NaN natively


@pytest.mark.parametrize(("task", "mode"), [("cls", "dynamic"), ("cls", "static"), ("reg", "dynamic")])
def test_mlp_int8(task: str, mode: str, logged: Any, store: Any, iris: Any, diabetes: Any, iris_csv: Path,
                  diabetes_csv: Path, tmp_path: Path) -> None:
    uri, est = logged[task, "mlp"]
    data = iris_csv if task == "cls" else diabetes_csv
    report = convert(store, uri, tmp_path / mode, mode, data, max_accuracy_drop=0.05)
    assert report.mode == mode and report.manifest.quantization["mode"] == mode
    if mode == "static":
        assert report.manifest.quantization["calibration_rows"] > 0
    import onnx

    ops = {n.op_type for n in onnx.load(str(report.out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}, ops
    X, _ = iris if task == "cls" else diabetes
    rt = edge_runtime.load(report.out)
    got = np.array([p.value for p in rt.predict_batch(X)])
    if task == "cls":
        assert (got == est.predict(X)).mean() >= 0.95
    else:
        want = est.predict(X)
        assert np.abs(got - want).mean() / want.std() <= 0.05


def test_parity_gate_stops_a_lossy_artifact(logged: Any, store: Any, diabetes_csv: Path, tmp_path: Path) -> None:
    # static int8 on an MLP regressor moves predictions by several percent of their spread
    uri, _ = logged["reg", "mlp"]
    with pytest.raises(ConversionError, match="parity gate failed for --quantize static") as info:
        convert(store, uri, tmp_path / "static", "static", diabetes_csv, max_accuracy_drop=0.001)
    assert "drop" in str(info.value) and "limit 0.001" in str(info.value)
    assert not (tmp_path / "static").exists()


def test_fp16_mlp(logged: Any, store: Any, iris: Any, iris_csv: Path, tmp_path: Path) -> None:
    # skl2onnx's leading Cast(float->float) used to break onnxconverter-common's float16 pass
    uri, est = logged["cls", "mlp"]
    report = convert(store, uri, tmp_path / "fp16", "fp16", iris_csv, candidate_timeout=60)
    assert report.mode == "fp16" and report.parity["passed"]
    import onnx

    inits = onnx.load(str(report.out / "model.onnx")).graph.initializer
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in inits)
    X, _ = iris
    got = np.array([p.value for p in edge_runtime.load(report.out).predict_batch(X)])
    assert (got == est.predict(X)).mean() >= 0.98


@pytest.mark.parametrize(("task", "kind", "mode", "why"), [
    ("cls", "forest", "dynamic", "tree ensembles are never int8-quantized"),
    ("reg", "hist_gboost", "static", "tree ensembles are never int8-quantized"),
    ("cls", "tree", "fp16", "tree ensembles keep float32"),
    ("cls", "logistic", "dynamic", "nothing int8 can take"),
    ("reg", "linear", "fp16", "nothing float16 can take"),
])
def test_mode_that_does_not_apply_says_why(task: str, kind: str, mode: str, why: str, logged: Any, store: Any,
                                          iris_csv: Path, diabetes_csv: Path, tmp_path: Path) -> None:
    uri, _ = logged[task, kind]
    with pytest.raises(ConversionError, match=why) as info:
        convert(store, uri, tmp_path / "x", mode, iris_csv if task == "cls" else diabetes_csv)
    assert "Traceback" not in str(info.value) and "--quantize none" in str(info.value)
    assert not (tmp_path / "x").exists()

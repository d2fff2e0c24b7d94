"""scikit-learn models (MLflow ``sklearn`` flavor, skops or cloudpickle) -> ONNX via skl2onnx.

Classifiers export ``label`` and a plain ``probabilities`` tensor (``zipmap=False``). Pipelines
over named columns (ColumnTransformer, string categories) take one ``[N, 1]`` input per
feature ("columns" layout); everything else takes one float32 ``[N, F]`` tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.features import resolve_features
from converters.flavors import Exported, Exporter, register
from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError, UnsupportedModel

log = logging.getLogger(__name__)

# ONNX opsets we target, and the oldest onnxruntime that runs them (opset 17: ORT 1.13;
# ai.onnx.ml 3: ORT 1.10). The runtime's own floor is in pyproject.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
MIN_ONNXRUNTIME = "1.13"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist, key in (("scikit-learn", "sklearn"), ("skl2onnx", "skl2onnx"), ("onnxruntime", "onnxruntime"),
                      ("mlflow", "mlflow"), ("onnx", "onnx")):
        try:
            out[key] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _final_estimator(model: Any) -> Any:
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def _walk(model: Any) -> list[Any]:
    """Every estimator inside pipelines / column transformers, depth first."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    out = [model]
    if isinstance(model, Pipeline):
        for _, step in model.steps:
            out.extend(_walk(step))
    elif isinstance(model, ColumnTransformer):
        for _, trans, _cols in model.transformers:
            if not isinstance(trans, str):
                out.extend(_walk(trans))
    return out


def _has_named_columns(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    for est in _walk(model):
        if isinstance(est, ColumnTransformer):
            for _, _t, cols in est.transformers:
                if isinstance(cols, str) or (isinstance(cols, (list, tuple)) and cols and isinstance(cols[0], str)):
                    return True
    return False


def _missing_ok(model: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """Features where NaN is a legitimate value: imputed ones, or all for HistGradientBoosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline

    imputers = (SimpleImputer, KNNImputer)
    hgb = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)

    def handles_nan(est: Any) -> bool:
        first = est.steps[0][1] if isinstance(est, Pipeline) else est
        return isinstance(first, imputers + hgb)

    if handles_nan(model):
        return names
    first = model.steps[0][1] if isinstance(model, Pipeline) else None
    if isinstance(first, ColumnTransformer):
        ok: set[str] = set()
        for _, trans, cols in first.transformers_:
            if isinstance(trans, str) or not handles_nan(trans):
                continue
            selected = [cols] if isinstance(cols, str) else list(cols)
            ok.update(names[c] if isinstance(c, (int, np.integer)) else str(c) for c in selected)
        return tuple(n for n in names if n in ok)
    return ()


def _install_hgb_fix() -> None:
    """skl2onnx 1.20 + scikit-learn 1.9: leaf nodes of HistGradientBoosting trees pass a
    Python ``False`` into an int list attribute and ONNX refuses it ("AttributeProto.ints:
    Expected an int, got a boolean"). Wrap the tree walker so the list holds ints."""
    from skl2onnx.operator_converters import random_forest as rf

    walker = rf.add_tree_to_attribute_pairs_hist_gradient_boosting
    if getattr(walker, "_edge_fixed", False):
        return

    def fixed(attr_pairs: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        walker(attr_pairs, *args, **kwargs)
        attr_pairs["nodes_missing_value_tracks_true"] = [
            int(v) for v in attr_pairs["nodes_missing_value_tracks_true"]]

    fixed._edge_fixed = True  # type: ignore[attr-defined]
    rf.add_tree_to_attribute_pairs_hist_gradient_boosting = fixed


@dataclass
class SklearnModel:
    model: Any
    task: str
    classes: tuple[Any, ...] | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    missing_ok: tuple[str, ...]
    model_class: str
    tree_ensemble: bool
    layout: str
    by_name: bool  # the model was fitted on a DataFrame (has feature_names_in_)
    sample: Any = None  # DataFrame read from --sample-data, if given
    flavor: str = "sklearn"
    libraries: dict[str, str] = field(default_factory=_versions)
    exporters: dict[str, Exporter] = field(default_factory=dict)
    _keras: Any = None

    def __post_init__(self) -> None:
        self.exporters = {"onnx": self.export_onnx, "tflite": self.export_tflite}

    def _x(self, rows: Any) -> Any:
        return rows if self.by_name or self.layout == "columns" else rows.to_numpy()

    def predict(self, rows: Any) -> np.ndarray:
        return np.asarray(self.model.predict(self._x(rows)))

    def predict_proba(self, rows: Any) -> np.ndarray | None:
        if self.task != "classification" or not hasattr(self.model, "predict_proba"):
            return None
        return np.asarray(self.model.predict_proba(self._x(rows)))

    # -- export ---------------------------------------------------------------------------
    def keras_model(self) -> Any:
        """The equivalent Keras graph (dense algebra only), for TFLite; built once."""
        if self._keras is None:
            from converters.flavors.sklearn_tflite import build_keras

            self._keras = build_keras(self.model, len(self.feature_names))
        return self._keras

    def export_tflite(self, out_dir: Path) -> Exported:
        from converters.flavors.sklearn_tflite import export_tflite

        return export_tflite(self, out_dir)  # type: ignore[no-any-return]

    def export_onnx(self, out_dir: Path) -> Exported:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

        _install_hgb_fix()
        if self.layout == "columns":
            initial: list[tuple[str, Any]] = []
            for n, t in zip(self.feature_names, self.feature_types, strict=True):
                if t == "string":
                    initial.append((n, StringTensorType([None, 1])))
                elif t == "int" and n not in self.missing_ok:
                    initial.append((n, Int64TensorType([None, 1])))
                else:
                    initial.append((n, FloatTensorType([None, 1])))
        else:
            initial = [("input", FloatTensorType([None, len(self.feature_names)]))]
        final = _final_estimator(self.model)
        options = {id(final): {"zipmap": False}} if self.task == "classification" and \
            hasattr(final, "predict_proba") else None
        try:
            onx = convert_sklearn(self.model, initial_types=initial, options=options,
                                  target_opset=TARGET_OPSET)
        except Exception as exc:  # skl2onnx raises RuntimeError/NotImplementedError/ValueError...
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "Unable to find a shape calculator" in msg or "not supported" in msg.lower():
                raise UnsupportedModel(f"scikit-learn model {self.model_class} ({msg})",
                                       hint="skl2onnx has no converter for it; register one with "
                                       "skl2onnx.update_registered_converter") from exc
            raise ConversionError(f"skl2onnx could not convert {self.model_class}: {msg}") from exc
        path = out_dir / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        return Exported(path=path, backend="onnx", inputs=tuple(_inputs(path)), outputs=tuple(self._outputs(path)),
                        input_layout=self.layout, requires={"onnxruntime": MIN_ONNXRUNTIME},
                        libraries=self.libraries)

    def _outputs(self, path: Path) -> list[Any]:
        from edge_runtime.backends import open_backend
        from edge_runtime.manifest import TensorSpec

        be = open_backend("onnx", path)
        try:
            outs = be.outputs()
        finally:
            be.close()
        specs = []
        for i, o in enumerate(outs):
            if self.task == "regression":
                role = "value" if i == 0 else "other"
            elif i == 0:
                role = "label"
            elif i == 1 and hasattr(_final_estimator(self.model), "predict_proba"):
                role = "probabilities"
            else:
                role = "other"  # e.g. LinearSVC decision scores
            specs.append(TensorSpec(o.name, o.dtype, o.shape, role))
        return specs


def _inputs(path: Path) -> list[Any]:
    from edge_runtime.backends import open_backend

    be = open_backend("onnx", path)
    try:
        return be.inputs()
    finally:
        be.close()


def _is_tree_ensemble(est: Any) -> bool:
    from sklearn.ensemble import BaseEnsemble
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
    from sklearn.tree import BaseDecisionTree

    return isinstance(est, (BaseDecisionTree, BaseHistGradientBoosting)) or (
        isinstance(est, BaseEnsemble) and isinstance(getattr(est, "estimator", None), BaseDecisionTree)) or \
        type(est).__name__ in ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
                               "ExtraTreesRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor")


def load(source: ModelSource, hint: FeatureHint) -> SklearnModel:
    import mlflow.sklearn
    from sklearn.base import is_classifier, is_regressor

    try:
        model = mlflow.sklearn.load_model(str(source.local_path))
    except Exception as exc:  # skops/pickle/IO errors of every kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"cannot load the scikit-learn model in {source.uri}: {first}",
                              hint="The model file may be corrupted or truncated; log the model again") from exc
    final = _final_estimator(model)
    name = type(final).__name__ if final is model else f"Pipeline({type(final).__name__})"
    if is_classifier(model):
        task = "classification"
    elif is_regressor(model):
        task = "regression"
    else:
        raise UnsupportedModel(f"scikit-learn {name}: neither a classifier nor a regressor",
                               supported=["classifiers", "regressors"])
    if getattr(final, "is_categorical_", None) is not None and np.any(final.is_categorical_):
        raise UnsupportedModel(f"{name} with categorical_features",
                               hint="skl2onnx cannot express categorical splits; one-hot encode the "
                               "categories in a Pipeline instead")
    model_names = getattr(model, "feature_names_in_", None)
    feats = resolve_features(source, hint, model_names=None if model_names is None else list(model_names),
                             model_width=getattr(model, "n_features_in_", None))
    layout = "columns" if ("string" in feats.types or _has_named_columns(model)) else "tensor"
    classes = None
    if task == "classification":
        classes = tuple(np.asarray(final.classes_).tolist())
        if not all(isinstance(c, (int, str)) for c in classes):
            raise UnsupportedModel(f"{name} with class labels of type {type(classes[0]).__name__}",
                                   hint="Use integer or string class labels")
    return SklearnModel(
        model=model, task=task, classes=classes, feature_names=feats.names, feature_types=feats.types,
        missing_ok=_missing_ok(model, feats.names), model_class=name, tree_ensemble=_is_tree_ensemble(final),
        layout=layout, by_name=model_names is not None, sample=feats.sample,
    )


register("sklearn", load)

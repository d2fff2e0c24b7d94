"""XGBoost and LightGBM models (MLflow ``xgboost`` / ``lightgbm`` flavors) -> ONNX via onnxmltools.

Both the scikit-learn wrappers (``XGBClassifier``, ``LGBMRegressor``, ...) and raw Boosters
load. Tree ensembles are never int8-quantized (the quantizers refuse ``tree_ensemble``
models): an int8 threshold moves a split. onnxmltools 1.16 targets opset 15 at most.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.features import resolve_features
from converters.flavors import Exported, Exporter, register
from converters.flavors.common import versions
from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError, UnsupportedModel
from edge_runtime.manifest import TensorSpec

log = logging.getLogger(__name__)

TARGET_OPSET = 15  # the highest onnxmltools 1.16 converts to
MIN_ONNXRUNTIME = "1.10"
EXTRA_HINT = "pip install 'edge-convert[boost]' (xgboost, lightgbm, onnxmltools)"


def _kind(model: Any, library: str) -> tuple[str, Any]:
    """(task, booster) for a wrapper or a raw booster."""
    name = type(model).__name__
    if name.endswith("Classifier"):
        return "classification", model
    if name.endswith(("Regressor", "Ranker")):
        return "regression", model
    if library == "xgboost" and name == "Booster":
        objective = str(_xgb_config(model).get("learner", {}).get("objective", {}).get("name", ""))
        return ("classification" if objective.startswith(("binary:logistic", "multi:softprob")) else "regression",
                model)
    if library == "lightgbm" and name == "Booster":
        objective = str(model.params.get("objective", ""))
        return ("classification" if objective in ("binary", "multiclass", "softmax") else "regression", model)
    raise UnsupportedModel(f"{library} model of type {name}",
                           supported=[f"{library} scikit-learn classifiers/regressors", f"{library} Booster"])


def _xgb_config(booster: Any) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads(booster.save_config()))
    except Exception:
        return {}


@dataclass
class BoostModel:
    model: Any
    library: str  # xgboost | lightgbm
    task: str
    classes: tuple[Any, ...] | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    model_class: str
    sample: Any = None
    missing_ok: tuple[str, ...] = ()
    tree_ensemble: bool = True
    flavor: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    exporters: dict[str, Exporter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.flavor = self.library
        self.exporters = {"onnx": self.export_onnx}
        self.libraries = versions(self.library, "onnxmltools", "onnx", "mlflow")

    # -- the source model -----------------------------------------------------------------
    def _x(self, rows: Any) -> np.ndarray:
        return np.asarray(rows.to_numpy() if hasattr(rows, "to_numpy") else rows, dtype=np.float32)

    def _booster_predict(self, x: np.ndarray) -> np.ndarray:
        if self.library == "xgboost":
            import xgboost as xgb

            return np.asarray(self.model.predict(xgb.DMatrix(x)))
        return np.asarray(self.model.predict(x))

    def predict(self, rows: Any) -> np.ndarray:
        x = self._x(rows)
        if type(self.model).__name__ != "Booster":
            return np.asarray(self.model.predict(x))
        y = self._booster_predict(x)
        if self.task == "classification":
            proba = self._proba(y)
            return np.asarray(self.classes)[proba.argmax(axis=1)]
        return y

    def predict_proba(self, rows: Any) -> np.ndarray | None:
        if self.task != "classification":
            return None
        x = self._x(rows)
        if type(self.model).__name__ != "Booster":
            return np.asarray(self.model.predict_proba(x))
        return self._proba(self._booster_predict(x))

    @staticmethod
    def _proba(y: np.ndarray) -> np.ndarray:
        return np.stack([1 - y, y], axis=1) if y.ndim == 1 else y

    # -- export ---------------------------------------------------------------------------
    def export_onnx(self, out_dir: Path) -> Exported:
        try:
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType
        except ImportError as exc:
            raise ConversionError("converting XGBoost/LightGBM models needs onnxmltools", hint=EXTRA_HINT) from exc
        initial = [("input", FloatTensorType([None, len(self.feature_names)]))]
        model = self.model
        try:
            if self.library == "xgboost":
                model = _xgb_plain_names(model)
                onx = onnxmltools.convert_xgboost(model, initial_types=initial, target_opset=TARGET_OPSET)
            else:
                onx = onnxmltools.convert_lightgbm(model, initial_types=initial, target_opset=TARGET_OPSET,
                                                   zipmap=False)
        except Exception as exc:  # onnxmltools raises RuntimeError/NotImplementedError/...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConversionError(f"onnxmltools could not convert {self.model_class}: {first}") from exc
        path = Path(out_dir) / "model.onnx"
        path.write_bytes(onx.SerializeToString())
        return Exported(path=path, backend="onnx", inputs=tuple(self._specs(path, inputs=True)),
                        outputs=tuple(self._specs(path, inputs=False)), requires={"onnxruntime": MIN_ONNXRUNTIME},
                        libraries=self.libraries)

    def _specs(self, path: Path, *, inputs: bool) -> list[TensorSpec]:
        from edge_runtime.backends import open_backend

        be = open_backend("onnx", path)
        try:
            specs = be.inputs() if inputs else be.outputs()
        finally:
            be.close()
        if inputs:
            return specs
        out = []
        for i, s in enumerate(specs):
            if self.task == "regression":
                role = "value" if i == 0 else "other"
            else:
                role = "label" if i == 0 else ("probabilities" if i == 1 else "other")
            # LightGBM's converter declares the label as shape [1]; it is one per row
            shape = (None,) if role == "label" else s.shape
            out.append(TensorSpec(s.name, s.dtype, shape, role))
        return out


def _xgb_plain_names(model: Any) -> Any:
    """onnxmltools needs features named f0, f1, ...: drop a booster's own names on a copy."""
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if not booster.feature_names:
        return model
    clone = copy.deepcopy(model)
    b = clone.get_booster() if hasattr(clone, "get_booster") else clone
    b.feature_names = None
    b.feature_types = None
    return clone


def _load(source: ModelSource, hint: FeatureHint, library: str) -> BoostModel:
    import importlib

    try:
        model = importlib.import_module(f"mlflow.{library}").load_model(str(source.local_path))
    except ImportError as exc:
        raise ConversionError(f"converting {library} models needs {library}", hint=EXTRA_HINT) from exc
    except Exception as exc:  # model file errors of every kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"cannot load the {library} model in {source.uri}: {first}") from exc
    task, _ = _kind(model, library)
    booster = model.get_booster() if hasattr(model, "get_booster") else getattr(model, "booster_", model)
    width = None
    if hasattr(model, "n_features_in_"):
        width = int(model.n_features_in_)
    elif hasattr(booster, "num_features"):
        width = int(booster.num_features())
    elif hasattr(booster, "num_feature"):
        width = int(booster.num_feature())
    names = getattr(model, "feature_names_in_", None)
    feats = resolve_features(source, hint, model_names=None if names is None else [str(n) for n in names],
                             model_width=width)
    classes = None
    if task == "classification":
        if hasattr(model, "classes_"):
            classes = tuple(np.asarray(model.classes_).tolist())
        else:
            n = int(_xgb_config(booster).get("learner", {}).get("learner_model_param", {}).get("num_class", 0) or 0) \
                if library == "xgboost" else int(booster.params.get("num_class", 1))
            classes = tuple(range(max(n, 2)))
    if "string" in feats.types:
        raise UnsupportedModel(f"{library} model with string feature {feats.names[feats.types.index('string')]!r}",
                               hint="Encode categories as numbers before training")
    return BoostModel(model=model, library=library, task=task, classes=classes, feature_names=feats.names,
                      feature_types=tuple("float" for _ in feats.names), model_class=type(model).__name__,
                      sample=feats.sample)


def load_xgboost(source: ModelSource, hint: FeatureHint) -> BoostModel:
    return _load(source, hint, "xgboost")


def load_lightgbm(source: ModelSource, hint: FeatureHint) -> BoostModel:
    return _load(source, hint, "lightgbm")


register("xgboost", load_xgboost)
register("lightgbm", load_lightgbm)

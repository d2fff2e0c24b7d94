"""scikit-learn models that are dense algebra -> an equivalent Keras graph -> TFLite.

For a device that has only LiteRT. The graph is built from the fitted weights, not trained:

    scalers     StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler: a per-feature
                x * a + b, kept as its own layer (folding it into the first Dense layer's
                weights wrecks int8 accuracy, FACTS.md)
    linear      LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor, BayesianRidge,
                HuberRegressor, ... (anything with coef_ / intercept_ and a linear predict)
    logistic    LogisticRegression (binary: sigmoid as [1 - p, p]; multiclass: softmax)
    MLP         MLPClassifier, MLPRegressor (relu, tanh, logistic, identity)

Anything else (trees, SVMs, kNN, encoders, imputers...) raises UnsupportedModel saying TFLite
cannot express it and pointing to --format onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import UnsupportedModel

SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")
LINEAR_REGRESSORS = ("LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV",
                     "SGDRegressor", "BayesianRidge", "ARDRegression", "HuberRegressor", "LassoLars", "Lars",
                     "OrthogonalMatchingPursuit", "TheilSenRegressor", "QuantileRegressor")
CLASSIFIERS = ("LogisticRegression", "LogisticRegressionCV", "MLPClassifier")
REGRESSORS = (*LINEAR_REGRESSORS, "MLPRegressor")
SUPPORTED = [*(f"{s} (in a Pipeline)" for s in SCALERS), *CLASSIFIERS, *REGRESSORS]
_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": None}


def _unsupported(what: str) -> UnsupportedModel:
    return UnsupportedModel(f"TFLite cannot express scikit-learn {what}: only dense algebra converts to TFLite",
                            supported=SUPPORTED, hint="Use --format onnx, which converts it with skl2onnx")


def _affine(step: Any) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with step.transform(x) == x * a + b."""
    name = type(step).__name__
    n = int(step.n_features_in_)
    ones, zeros = np.ones(n), np.zeros(n)
    if name == "StandardScaler":
        scale = step.scale_ if step.scale_ is not None else ones
        mean = step.mean_ if step.mean_ is not None else zeros
        return 1.0 / scale, -mean / scale
    if name == "MinMaxScaler":
        if getattr(step, "clip", False):
            raise _unsupported("MinMaxScaler(clip=True)")
        return np.asarray(step.scale_), np.asarray(step.min_)
    if name == "MaxAbsScaler":
        return 1.0 / step.scale_, zeros
    if name == "RobustScaler":
        scale = step.scale_ if step.scale_ is not None else ones
        center = step.center_ if step.center_ is not None else zeros
        return 1.0 / scale, -center / scale
    raise _unsupported(name)


def _steps(model: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        out = []
        for _, step in model.steps:
            if step in (None, "passthrough"):
                continue
            out.extend(_steps(step))
        return out
    return [model]


def check(model: Any) -> None:
    """Raise UnsupportedModel unless ``model`` is dense algebra TFLite can express."""
    steps = _steps(model)
    for step in steps[:-1]:
        if type(step).__name__ not in SCALERS:
            raise _unsupported(f"{type(step).__name__} (a pipeline step)")
    final = type(steps[-1]).__name__
    if final not in CLASSIFIERS + REGRESSORS:
        raise _unsupported(final)
    if final.startswith("MLP") and steps[-1].activation not in _ACTIVATIONS:
        raise _unsupported(f"{final}(activation={steps[-1].activation!r})")
    if final in ("MLPClassifier",) and getattr(steps[-1], "out_activation_", "") not in ("softmax", "logistic"):
        raise _unsupported(f"{final} with output activation {steps[-1].out_activation_!r}")
    if final.startswith("LogisticRegression") and len(steps[-1].classes_) > 2:
        # sklearn >= 1.5 multiclass logistic regression is multinomial (softmax); OvR is not
        if getattr(steps[-1], "multi_class", "auto") == "ovr":
            raise _unsupported("LogisticRegression(multi_class='ovr')")


def build_keras(model: Any, n_features: int) -> Any:
    """The Keras graph computing ``model``'s probabilities (classifiers) or values (regressors)."""
    check(model)
    import keras

    steps = _steps(model)
    inp = keras.Input((n_features,), name="input", dtype="float32")
    x = inp
    for step in steps[:-1]:
        a, b = _affine(step)
        # Normalization computes (x - mean) / sqrt(variance); a > 0 for every scaler here
        a = np.where(a == 0, 1.0, a)
        x = keras.layers.Normalization(mean=(-b / a).astype(np.float32),
                                       variance=((1.0 / a) ** 2).astype(np.float32))(x)
    final = steps[-1]
    name = type(final).__name__

    def dense(x: Any, w: np.ndarray, b: np.ndarray, activation: str | None) -> Any:
        w = np.asarray(w, dtype=np.float32).reshape(n_in(x), -1)
        layer = keras.layers.Dense(w.shape[1], activation=activation)
        y = layer(x)
        layer.set_weights([w, np.asarray(b, dtype=np.float32).reshape(-1)])
        return y

    def n_in(x: Any) -> int:
        return int(x.shape[-1])

    if name.startswith("MLP"):
        act = _ACTIVATIONS[final.activation]
        for w, b in zip(final.coefs_[:-1], final.intercepts_[:-1], strict=True):
            x = dense(x, w, b, act)
        out_act = final.out_activation_
        y = dense(x, final.coefs_[-1], final.intercepts_[-1],
                  {"softmax": "softmax", "logistic": "sigmoid"}.get(out_act))
        if out_act == "logistic":
            y = keras.layers.Concatenate()([keras.ops.subtract(1.0, y), y])
    elif name.startswith("LogisticRegression"):
        coef = np.asarray(final.coef_)
        if coef.shape[0] == 1:
            y = dense(x, coef.T, final.intercept_, "sigmoid")
            y = keras.layers.Concatenate()([keras.ops.subtract(1.0, y), y])
        else:
            y = dense(x, coef.T, final.intercept_, "softmax")
    else:
        coef = np.asarray(final.coef_, dtype=np.float64)
        coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
        intercept = np.atleast_1d(np.asarray(getattr(final, "intercept_", 0.0), dtype=np.float64))
        y = dense(x, coef.T, np.broadcast_to(intercept, (coef.shape[0],)), None)
    return keras.Model(inp, y, name="sklearn_dense")


def export_tflite(source_model: Any, out_dir: Path) -> Any:
    """Exporter for a converters.flavors.sklearn.SklearnModel: write model.tflite."""
    from converters.flavors import Exported
    from converters.flavors.common import output_specs
    from converters.tflite_quantize import litert_requires, write_tflite

    if source_model.layout != "tensor":
        raise _unsupported("pipelines over named or string columns")
    keras_model = source_model.keras_model()
    path = write_tflite(keras_model, out_dir, "none")
    n_out = len(source_model.classes) if source_model.classes else int(keras_model.output_shape[-1])
    ins, outs = output_specs(path, "tflite", source_model.task, n_out)
    return Exported(path=path, backend="tflite", inputs=ins, outputs=outs, requires=litert_requires(),
                    libraries={**source_model.libraries, **_tf_versions()})


def _tf_versions() -> dict[str, str]:
    from converters.flavors.common import versions

    return versions("tensorflow-cpu", "tensorflow", "keras")

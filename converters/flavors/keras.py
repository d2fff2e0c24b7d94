"""Keras 3 models (MLflow ``keras`` and ``tensorflow`` flavors) -> TFLite or ONNX.

The artifact takes one flat float32 row per prediction, like every other artifact: a model
whose input is an image or a sequence gets a Reshape in front (feature ``x{i}`` is the i-th
value of the C-order flattened input). A classifier is a model whose last layer ends in
softmax (k classes ``0..k-1``) or a one-unit sigmoid (classes ``0, 1``; the artifact outputs
``[1 - p, p]``); anything else is a regressor.

TFLite: ``tf.lite.TFLiteConverter`` in every mode (converters/tflite_quantize.py).
ONNX: the wrapped model is traced to a frozen graph (variables and captured constants folded,
which Keras 3's own ``export(format="onnx")`` misses for Normalization layers) and converted
with tf2onnx.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.flavors import Exported, Exporter, register
from converters.flavors.common import ScoresModel, flat_features, output_specs, versions
from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError, UnsupportedModel

log = logging.getLogger(__name__)

ONNX_OPSET = 17
MIN_ONNXRUNTIME = "1.13"
INPUT_NAME = "input"


def _task(model: Any) -> tuple[str, tuple[Any, ...] | None, bool]:
    """(task, classes, binary-sigmoid) from the last layer."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    act = getattr(getattr(last, "activation", None), "__name__", "")
    if type(last).__name__ == "Softmax":
        act = "softmax"
    width = int(model.output_shape[-1])
    if act == "softmax" and width >= 2:
        return "classification", tuple(range(width)), False
    if act == "sigmoid" and width == 1:
        return "classification", (0, 1), True
    return "regression", None, False


def unsupported_io(model: Any) -> str | None:
    ins = getattr(model, "inputs", None) or []
    outs = getattr(model, "outputs", None) or []
    if len(ins) != 1 or len(outs) != 1:
        return f"{len(ins)} inputs and {len(outs)} outputs (only one input and one output are supported)"
    return None


@dataclass
class KerasModel(ScoresModel):
    model: Any
    task: str
    classes: tuple[Any, ...] | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    input_shape: tuple[int, ...]  # without the batch dimension
    binary_sigmoid: bool
    model_class: str
    flavor: str
    sample: Any = None
    missing_ok: tuple[str, ...] = ()
    tree_ensemble: bool = False
    libraries: dict[str, str] = field(default_factory=lambda: versions("tensorflow-cpu", "tensorflow", "keras",
                                                                         "mlflow"))
    exporters: dict[str, Exporter] = field(default_factory=dict)
    _flat: Any = None

    def __post_init__(self) -> None:
        self.exporters = {"tflite": self.export_tflite, "onnx": self.export_onnx}

    # -- the source model -----------------------------------------------------------------
    def _raw(self, rows: Any) -> np.ndarray:
        x = np.asarray(rows.to_numpy() if hasattr(rows, "to_numpy") else rows, dtype=np.float32)
        y = self.keras_model().predict_on_batch(x)
        return np.asarray(y, dtype=np.float64)

    def keras_model(self) -> Any:
        """The model behind a flat float32 input ``[N, F]``, probabilities or values out."""
        if self._flat is None:
            import keras

            inp = keras.Input((len(self.feature_names),), name=INPUT_NAME, dtype="float32")
            x = inp if len(self.input_shape) == 1 else keras.layers.Reshape(self.input_shape)(inp)
            y = self.model(x)
            if self.binary_sigmoid:
                y = keras.layers.Concatenate()([keras.ops.subtract(1.0, y), y])
            self._flat = keras.Model(inp, y, name="edge_flat")
        return self._flat

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes else int(self.model.output_shape[-1])

    # -- export ---------------------------------------------------------------------------
    def export_tflite(self, out_dir: Path) -> Exported:
        from converters.tflite_quantize import litert_requires, write_tflite

        path = write_tflite(self.keras_model(), out_dir, "none")
        ins, outs = output_specs(path, "tflite", self.task, self.n_outputs)
        return Exported(path=path, backend="tflite", inputs=ins, outputs=outs, requires=litert_requires(),
                        libraries=self.libraries)

    def export_onnx(self, out_dir: Path) -> Exported:
        path = Path(out_dir) / "model.onnx"
        onx = keras_to_onnx(self.keras_model(), len(self.feature_names),
                            "probabilities" if self.task == "classification" else "value")
        path.write_bytes(onx.SerializeToString())
        ins, outs = output_specs(path, "onnx", self.task, self.n_outputs)
        return Exported(path=path, backend="onnx", inputs=ins, outputs=outs,
                        requires={"onnxruntime": MIN_ONNXRUNTIME},
                        libraries={**self.libraries, **versions("tf2onnx", "onnx")})


def rename_io(onx: Any, names: dict[str, str]) -> Any:
    """Rename graph inputs/outputs (and every reference to them) in an ONNX model."""
    g = onx.graph
    for v in (*g.input, *g.output):
        if v.name in names:
            v.name = names[v.name]
    for node in g.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    return onx


def keras_to_onnx(model: Any, width: int, output_name: str) -> Any:
    """A Keras model with a flat float input -> ONNX ModelProto, dynamic batch."""
    from converters.tflite_quantize import import_tf

    tf = import_tf()
    try:
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    except ImportError as exc:
        raise ConversionError("converting a Keras model to ONNX needs tf2onnx",
                              hint="pip install 'edge-convert[tflite]' (tensorflow, tf2onnx), "
                              "or use --format tflite") from exc
    spec = tf.TensorSpec((None, width), tf.float32, name=INPUT_NAME)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    try:
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
        graph_def = frozen.graph.as_graph_def()
        ins = [t.name for t in frozen.inputs]
        outs = [t.name for t in frozen.outputs]
        onx, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=ins, output_names=outs, opset=ONNX_OPSET)
    except Exception as exc:  # tf2onnx raises assorted errors for ops it lacks
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"tf2onnx could not convert the Keras model: {first}",
                              hint="Use --format tflite, which converts every Keras layer TFLite supports") from exc
    return rename_io(onx, {ins[0]: INPUT_NAME, outs[0]: output_name})


def _load(source: ModelSource, hint: FeatureHint, flavor: str) -> KerasModel:
    from converters.tflite_quantize import import_tf

    import_tf()
    try:
        if flavor == "keras":
            import mlflow.keras

            model = mlflow.keras.load_model(str(source.local_path))
        else:
            import mlflow.tensorflow

            model = mlflow.tensorflow.load_model(str(source.local_path))
    except Exception as exc:  # mlflow/keras raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"cannot load the {flavor} model in {source.uri}: {first}") from exc
    if not hasattr(model, "layers") or not hasattr(model, "output_shape"):
        raise UnsupportedModel(f"{flavor} model of type {type(model).__name__} (a TensorFlow SavedModel, not a "
                               "Keras model)", supported=["Keras 3 models logged with mlflow.keras or "
                                                          "mlflow.tensorflow"])
    bad = unsupported_io(model)
    if bad:
        raise UnsupportedModel(f"Keras model with {bad}", supported=["one input, one output"])
    shape = tuple(int(d) for d in model.input_shape[1:])
    if any(d is None or d <= 0 for d in shape):
        raise UnsupportedModel(f"Keras model with a variable input dimension {model.input_shape}",
                               hint="Give the Input layer a fixed shape apart from the batch")
    task, classes, binary = _task(model)
    feats = flat_features(source, hint, math.prod(shape))
    return KerasModel(model=model, task=task, classes=classes, feature_names=feats.names,
                      feature_types=("float",) * len(feats.names), input_shape=shape, binary_sigmoid=binary,
                      model_class=f"{type(model).__name__}({model.name})", flavor=flavor, sample=feats.sample)


def load_keras(source: ModelSource, hint: FeatureHint) -> KerasModel:
    return _load(source, hint, "keras")


def load_tensorflow(source: ModelSource, hint: FeatureHint) -> KerasModel:
    return _load(source, hint, "tensorflow")


register("keras", load_keras)
register("tensorflow", load_tensorflow)

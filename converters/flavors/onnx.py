"""ONNX models logged with ``mlflow.onnx``: pass through, optimise, then the usual quantize and gate.

The source model for the parity gate is the logged file itself, run by onnxruntime without
graph optimisations. The exported file is that model after onnxruntime's *basic* offline
optimisations (constant folding, redundant-node removal: hardware-independent, so the file
stays portable), kept only when it still gives the same outputs on a probe batch.

What the model is comes from its graph: an ``ai.onnx.ml`` classifier node gives the task and
class labels; a single float output produced by Softmax is a classifier over ``0..k-1``;
anything else is a regressor. The input must be one float tensor ``[N, F]`` (or ``[N, ...]``,
flattened into ``F`` features) or one ``[N, 1]`` tensor per feature.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.flavors import Exported, Exporter, register
from converters.flavors.common import flat_features, versions
from converters.source import FeatureHint, ModelSource
from edge_runtime.errors import ConversionError, UnsupportedModel
from edge_runtime.manifest import TensorSpec

log = logging.getLogger(__name__)

MIN_ONNXRUNTIME = "1.13"
_CLASSIFIERS = ("LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier")


def _session(path: Path, optimize: bool) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _classes_from_graph(onx: Any) -> tuple[Any, ...] | None:
    from onnx import helper

    for node in onx.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _CLASSIFIERS:
            for attr in node.attribute:
                if attr.name == "classlabels_ints" or attr.name == "classlabels_int64s":
                    return tuple(int(v) for v in helper.get_attribute_value(attr))
                if attr.name == "classlabels_strings":
                    return tuple(v.decode() for v in helper.get_attribute_value(attr))
    return None


@dataclass
class OnnxModel:
    path: Path  # the logged model file
    session: Any
    task: str
    classes: tuple[Any, ...] | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    input_name: str
    input_shape: tuple[int, ...]  # per row, for reshaping flat rows
    roles: tuple[str, ...]  # per output
    model_class: str
    sample: Any = None
    flavor: str = "onnx"
    missing_ok: tuple[str, ...] = ()
    tree_ensemble: bool = False
    libraries: dict[str, str] = field(default_factory=lambda: versions("onnx", "onnxruntime", "mlflow"))
    exporters: dict[str, Exporter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.exporters = {"onnx": self.export_onnx}

    def _run(self, rows: Any) -> list[np.ndarray]:
        x = np.asarray(rows.to_numpy() if hasattr(rows, "to_numpy") else rows, dtype=np.float32)
        return list(self.session.run(None, {self.input_name: x.reshape(-1, *self.input_shape)}))

    def predict(self, rows: Any) -> np.ndarray:
        outs = self._run(rows)
        if "label" in self.roles:
            return np.asarray(outs[self.roles.index("label")]).reshape(-1)
        if self.task == "classification":
            proba = outs[self.roles.index("probabilities")]
            return np.asarray(self.classes)[np.argmax(proba, axis=1)]
        y = np.asarray(outs[self.roles.index("value")], dtype=np.float64)
        return y.reshape(len(y), -1)[:, 0] if y.reshape(len(y), -1).shape[1] == 1 else y

    def predict_proba(self, rows: Any) -> np.ndarray | None:
        if "probabilities" not in self.roles:
            return None
        return np.asarray(self._run(rows)[self.roles.index("probabilities")], dtype=np.float64)

    def export_onnx(self, out_dir: Path) -> Exported:
        import onnx

        path = Path(out_dir) / "model.onnx"
        src = onnx.load(str(self.path))
        if len(self.input_shape) > 1:
            src = _flatten_input(src, self.input_name, len(self.feature_names), self.input_shape)
        plain = Path(out_dir) / "plain.onnx"
        onnx.save(src, str(plain))
        chosen = plain
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(path)
            ort.InferenceSession(str(plain), sess_options=so, providers=["CPUExecutionProvider"])
            probe = np.random.default_rng(0).standard_normal((8, len(self.feature_names))).astype(np.float32)
            a = _session(plain, False).run(None, {self.input_name: probe})
            b = _session(path, False).run(None, {self.input_name: probe})
            same = all(_same(x, y) for x, y in zip(a, b, strict=True))
            if same and path.stat().st_size <= plain.stat().st_size * 1.5:
                chosen = path
            else:
                log.info("onnxruntime's basic optimisation changed outputs or grew the file; keeping the original")
        except Exception as exc:  # the optimiser is a nicety: any failure keeps the original
            log.info("offline optimisation skipped: %s", exc)
        if chosen is plain:
            path.write_bytes(plain.read_bytes())
        plain.unlink()
        from edge_runtime.backends import open_backend

        be = open_backend("onnx", path)
        try:
            ins, outs = be.inputs(), be.outputs()
        finally:
            be.close()
        outputs = tuple(TensorSpec(o.name, o.dtype, (None, *o.shape[1:]) if r == "label" else o.shape, r)
                        for o, r in zip(outs, self.roles, strict=True))
        return Exported(path=path, backend="onnx", inputs=tuple(ins), outputs=outputs,
                        requires={"onnxruntime": MIN_ONNXRUNTIME}, libraries=self.libraries)


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
        return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), atol=1e-5))
    return bool(np.array_equal(a, b))


def _flatten_input(onx: Any, name: str, width: int, shape: tuple[int, ...]) -> Any:
    """Make the model take flat rows ``[N, width]`` and reshape them to ``[N, *shape]`` inside."""
    from onnx import TensorProto, helper, numpy_helper

    g = onx.graph
    inner = f"{name}__shaped"
    for node in g.node:
        node.input[:] = [inner if n == name else n for n in node.input]
    target = numpy_helper.from_array(np.array([-1, *shape], dtype=np.int64), name=f"{name}__shape")
    g.initializer.append(target)
    g.node.insert(0, helper.make_node("Reshape", [name, target.name], [inner]))
    for v in g.input:
        if v.name == name:
            v.CopyFrom(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width]))
    return onx


def load(source: ModelSource, hint: FeatureHint) -> OnnxModel:
    import onnx

    conf = source.flavors.get("onnx", {})
    path = source.local_path / str(conf.get("data", "model.onnx"))
    if not path.is_file():
        found = sorted(source.local_path.glob("*.onnx"))
        if not found:
            raise ConversionError(f"no .onnx file in {source.uri}")
        path = found[0]
    try:
        onx = onnx.load(str(path))
        session = _session(path, False)
    except Exception as exc:  # onnx / onnxruntime raise their own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"cannot open the ONNX model in {source.uri}: {first}") from exc
    ins = session.get_inputs()
    if len(ins) != 1 or ins[0].type != "tensor(float)":
        got = ", ".join(f"{i.name} {i.type}" for i in ins)
        raise UnsupportedModel(f"ONNX model with inputs {got}", supported=["one float tensor input [N, F] or [N, ...]"],
                               hint="Export the model with a single float input")
    dims = ins[0].shape[1:]
    if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
        raise UnsupportedModel(f"ONNX input {ins[0].name} of shape {ins[0].shape}",
                               hint="Every dimension but the batch must be fixed")
    shape = tuple(int(d) for d in dims)
    outs = session.get_outputs()
    classes = _classes_from_graph(onx)
    roles: list[str] = []
    if classes is not None:
        task = "classification"
        for o in outs:
            if o.type in ("tensor(int64)", "tensor(string)") and "label" not in roles:
                roles.append("label")
            elif o.type == "tensor(float)" and "probabilities" not in roles:
                roles.append("probabilities")
            else:
                roles.append("other")
    else:
        producers = {out: n.op_type for n in onx.graph.node for out in n.output}
        first = outs[0]
        width = first.shape[-1] if len(first.shape) >= 2 and isinstance(first.shape[-1], int) else 1
        if first.type == "tensor(float)" and producers.get(first.name) == "Softmax" and width >= 2:
            task, classes = "classification", tuple(range(width))
            roles = ["probabilities"] + ["other"] * (len(outs) - 1)
        elif first.type in ("tensor(float)", "tensor(double)"):
            task = "regression"
            roles = ["value"] + ["other"] * (len(outs) - 1)
        else:
            raise UnsupportedModel(f"ONNX model whose first output {first.name} is {first.type}",
                                   hint="A regressor's first output must be float; a classifier needs "
                                   "ai.onnx.ml classifier labels or a Softmax output")
    feats = flat_features(source, hint, math.prod(shape))
    tree = any(n.domain == "ai.onnx.ml" and n.op_type.startswith("TreeEnsemble") for n in onx.graph.node)
    return OnnxModel(path=path, session=session, task=task, classes=classes, feature_names=feats.names,
                     feature_types=("float",) * len(feats.names), input_name=ins[0].name, input_shape=shape,
                     roles=tuple(roles), model_class=f"ONNX({onx.producer_name or 'unknown producer'})",
                     sample=feats.sample, tree_ensemble=tree)


register("onnx", load)

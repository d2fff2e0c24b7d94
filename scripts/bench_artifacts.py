"""Real ONNX artifacts for the bench tests and scripts: sklearn models trained on bundled data,
converted with skl2onnx (fp32), quantized with onnxruntime (int8) or onnxconverter-common (fp16),
with manifests holding smoke rows and reference histograms computed here.

Heavy imports stay inside the functions: only tests and scripts call them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np


def write_onnx_artifact(out: Path, onnx_bytes: bytes, *, task: str, names: list[str], X: np.ndarray,
                        name: str, quantization: str = "none", classes: list[Any] | None = None,
                        reference: bool = True) -> Path:
    """Write model.onnx and a manifest whose smoke values are what this very file computes."""
    import onnxruntime as ort

    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
    from edge_runtime.reference import build_reference

    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.onnx"
    model_path.write_bytes(onnx_bytes)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    got = sess.run(None, {in_name: X.astype(np.float32)})
    if task == "classification":
        preds = np.asarray(got[0]).reshape(-1)
        outputs = (TensorSpec("label", "int64", (None,), "label"),
                   TensorSpec("probabilities", "float32", (None, len(classes or [])), "probabilities"))
    else:
        preds = np.asarray(got[0], dtype=np.float64).reshape(-1)
        outputs = (TensorSpec(sess.get_outputs()[0].name, "float32", (None, 1), "value"),)
    smoke_idx = [0, len(X) // 2, len(X) - 1]
    smoke: dict[str, Any] = {"rows": X[smoke_idx].astype(float).tolist(), "atol": 1e-2,
                             "values": [p.item() for p in preds[smoke_idx]]}
    m = Manifest(
        name=name, version="1", backend="onnx", file="model.onnx", sha256=sha256_file(model_path),
        size_bytes=model_path.stat().st_size, task=task,
        inputs=(TensorSpec(in_name, "float32", (None, len(names))),), outputs=outputs,
        feature_names=tuple(names), feature_types=tuple("float" for _ in names),
        classes=tuple(classes) if classes is not None else None,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        source={"uri": "sklearn (test)", "flavor": "sklearn"}, quantization={"mode": quantization},
        smoke=smoke, reference=build_reference(X, names, preds.tolist(), classes=classes) if reference else {},
    )
    write_manifest(out, m)
    return out


def iris_mlp_artifacts(root: Path, kinds: tuple[str, ...] = ("fp32", "int8")) -> dict[str, Path]:
    """An MLPClassifier on iris as fp32, dynamic int8 (QUInt8) and/or fp16 ONNX artifacts."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    data = load_iris()
    X = data.data.astype(np.float32)
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in data.feature_names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(64, 32), solver="lbfgs", max_iter=300, random_state=0)
        clf.fit(X, data.target)
    onx = to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    fp32 = onx.SerializeToString()
    out: dict[str, Path] = {}
    for kind in kinds:
        if kind == "fp32":
            blob = fp32
        elif kind == "int8":
            blob = _quantize_int8(fp32, root)
        elif kind == "fp16":
            blob = _to_fp16(onx)
        else:
            raise ValueError(kind)
        out[kind] = write_onnx_artifact(root / f"iris-{kind}", blob, task="classification", names=names, X=X,
                                        name="iris-mlp", quantization={"fp32": "none"}.get(kind, kind),
                                        classes=[0, 1, 2])
    return out


def diabetes_linear_artifact(root: Path, reference: bool = True) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    data = load_diabetes()
    X = data.data.astype(np.float32)
    reg = LinearRegression().fit(X, data.target)
    onx = to_onnx(reg, X[:1], target_opset=17)
    return write_onnx_artifact(root / ("diabetes" if reference else "diabetes-noref"), onx.SerializeToString(),
                               task="regression", names=list(data.feature_names), X=X, name="diabetes-linear",
                               reference=reference)


def _quantize_int8(fp32: bytes, tmp: Path) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp.mkdir(parents=True, exist_ok=True)
    src, dst = tmp / "_fp32.onnx", tmp / "_int8.onnx"
    src.write_bytes(fp32)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    blob = dst.read_bytes()
    src.unlink()
    dst.unlink()
    return blob


def _to_fp16(onx: Any) -> bytes:
    """fp16 weights and math for the standard ops; ai.onnx.ml ops stay fp32 behind casts, and
    inputs/outputs keep their fp32 types."""
    import onnx
    from onnxconverter_common import float16

    # skl2onnx starts with Cast(X -> float), a no-op on float input that the converter would leave
    # feeding fp32 into an fp16 MatMul (the load error in FACTS.md); drop it. (Blocking Cast
    # instead sends the converter into a loop.)
    model = onnx.ModelProto()
    model.CopyFrom(onx)
    graph = model.graph
    first = graph.node[0]
    if first.op_type == "Cast" and first.input[0] == graph.input[0].name:
        for node in graph.node[1:]:
            for i, name in enumerate(node.input):
                if name == first.output[0]:
                    node.input[i] = first.input[0]
        graph.node.remove(first)
    block = sorted({n.op_type for n in graph.node if n.domain == "ai.onnx.ml"})
    model = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block or None)
    return model.SerializeToString()  # type: ignore[no-any-return]

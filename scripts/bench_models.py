"""Real ONNX artifacts for the reliability tests and benchmark, built from sklearn's bundled data.

(The converters ship the product's path to artifacts; this builds just enough of one, with a
drift reference and a smoke test, so the runtime can be measured on a real onnxruntime model.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def iris_artifact(d: Path, *, version: str = "1", model: str = "logreg") -> tuple[Path, np.ndarray]:
    """A classifier on iris (``logreg``; ``forest``: 100 trees; ``mlp``: 1024-1024 MLP, heavy per call);
    returns (artifact dir, float32 features)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
    from edge_runtime.reference import build_reference

    data = load_iris()
    x = data.data.astype(np.float32)
    names = tuple(n.replace(" (cm)", "").replace(" ", "_") for n in data.feature_names)
    import warnings

    clf: Any = {"logreg": lambda: LogisticRegression(max_iter=500),
                "forest": lambda: RandomForestClassifier(100, random_state=0),
                "mlp": lambda: MLPClassifier((1024, 1024), max_iter=20, random_state=0)}[model]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few MLP iterations do not converge; accuracy is not the point
        clf.fit(x, data.target)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    out_names = [o.name for o in onx.graph.output]
    pred = clf.predict(x)
    smoke_rows = x[[0, 60, 120]]
    m = Manifest(
        name=f"iris-{model}", version=version, backend="onnx", file="model.onnx",
        sha256=sha256_file(d / "model.onnx"), size_bytes=(d / "model.onnx").stat().st_size,
        task="classification",
        inputs=(TensorSpec(onx.graph.input[0].name, "float32", (None, 4)),),
        outputs=(TensorSpec(out_names[0], "int64", (None,), "label"),
                 TensorSpec(out_names[1], "float32", (None, 3), "probabilities")),
        feature_names=names, feature_types=("float",) * 4, classes=(0, 1, 2),
        smoke={"rows": smoke_rows.tolist(), "values": clf.predict(smoke_rows).tolist()},
        reference=build_reference(x, names, pred.tolist(), classes=[0, 1, 2]),
    )
    write_manifest(d, m)
    return d, x


def raw_session(d: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(d / "model.onnx"), sess_options=so, providers=["CPUExecutionProvider"])

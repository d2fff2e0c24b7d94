"""bench on real .tflite artifacts (a Keras MLP converted here), through the backend registry."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

# find_spec, not importorskip: importing TensorFlow at collection would cost every worker seconds
if importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("LiteRT (the [tflite] extra) is not installed", allow_module_level=True)
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow (edge-convert[tflite]) makes the test models", allow_module_level=True)

from edge_runtime.bench.runner import BenchSettings, bench

pytestmark = pytest.mark.slow

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="module")
def tflite_artifacts(tmp_path_factory: pytest.TempPathFactory, keras_iris_mlp: dict[str, Any]) -> dict[str, Path]:
    import tensorflow as tf

    from edge_runtime.backends import open_backend
    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
    from edge_runtime.reference import build_reference

    model, X = keras_iris_mlp["model"], keras_iris_mlp["X"]
    out = {}
    for mode in ("fp32", "dynamic"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        d = tmp_path_factory.mktemp(f"tflite-{mode}")
        (d / "model.tflite").write_bytes(conv.convert())
        be = open_backend("tflite", d / "model.tflite")
        proba = be.run({be.inputs()[0].name: X})[0]
        preds = proba.argmax(axis=1).tolist()
        write_manifest(d, Manifest(
            name="iris-keras", version="1", backend="tflite", file="model.tflite",
            sha256=sha256_file(d / "model.tflite"), size_bytes=(d / "model.tflite").stat().st_size,
            task="classification", inputs=tuple(be.inputs()),
            outputs=(TensorSpec(be.outputs()[0].name, "float32", (None, 3), "probabilities"),),
            feature_names=FEATURES, feature_types=("float",) * 4, classes=(0, 1, 2),
            quantization={"mode": mode}, reference=build_reference(X, FEATURES, preds, classes=[0, 1, 2]),
            smoke={"rows": X[:2].tolist(), "values": preds[:2]}))
        be.close()
        out[mode] = d
    return out


def test_bench_tflite_fp32_against_dynamic_int8(tflite_artifacts: dict[str, Path]) -> None:
    s = BenchSettings(runs=40, warmup=2, rows=64, batch_sizes=(1, 4))
    report = bench([tflite_artifacts["fp32"], tflite_artifacts["dynamic"]], s)
    assert [(m.quantization, m.batch_size) for m in report.results] == [("fp32", 1), ("fp32", 4),
                                                                          ("dynamic", 1), ("dynamic", 4)]
    for m in report.results:
        lat = m.latency
        assert m.backend == "tflite" and lat.runs == 40
        assert [lat.min_ms, lat.p50_ms, lat.p99_ms, lat.max_ms] == sorted([lat.min_ms, lat.p50_ms, lat.p99_ms,
                                                                           lat.max_ms])
        assert m.file_size_bytes == (Path(m.artifact) / "model.tflite").stat().st_size
        assert m.load_ms >= m.session_ms > 0 and m.first_ms > 0
    agr = report.results[2].agreement
    assert agr is not None and agr["rows"] == 64 and agr["label_agreement"] >= 0.9
    assert report.device["litert"].startswith("ai-edge-litert")
    assert any("tflite start-up" in n for n in report.notes)

"""The LiteRT backend on real .tflite files made here with TensorFlow from a small Keras MLP."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# find_spec, not importorskip: importing TensorFlow at collection would cost every worker ~4 s
if importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("LiteRT (the [tflite] extra) is not installed", allow_module_level=True)
if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("TensorFlow (edge-convert[tflite]) makes the test models", allow_module_level=True)

import edge_runtime
from edge_runtime.backends import BackendOptions, open_backend
from edge_runtime.backends.litert import load_error
from edge_runtime.errors import BackendError, ModelLoadError
from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest

pytestmark = pytest.mark.slow

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="module")
def iris_models(tmp_path_factory: pytest.TempPathFactory, keras_iris_mlp: dict[str, Any]) -> dict[str, object]:
    """The shared Keras MLP on iris, and its .tflite files: fp32, dynamic, int8 with int8 I/O."""
    import tensorflow as tf

    model, X, y = keras_iris_mlp["model"], keras_iris_mlp["X"], keras_iris_mlp["y"]
    d = tmp_path_factory.mktemp("tflite")
    files = {}
    for mode in ("fp32", "dynamic", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "fp32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "int8":
            conv.representative_dataset = lambda: ([r[None]] for r in X[::3])
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        path = d / f"{mode}.tflite"
        path.write_bytes(conv.convert())
        files[mode] = path
    return {"X": X, "y": y, "keras": keras_iris_mlp["proba"], "files": files, "dir": d}


def artifact(src: Path, d: Path) -> Path:
    """A TFLite artifact directory for ``src`` (what the converter writes, minus parity)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(src.read_bytes())
    be = open_backend("tflite", d / "model.tflite")
    m = Manifest(name="iris", version="1", backend="tflite", file="model.tflite",
                 sha256=sha256_file(d / "model.tflite"), size_bytes=(d / "model.tflite").stat().st_size,
                 task="classification", inputs=tuple(be.inputs()),
                 outputs=(TensorSpec(be.outputs()[0].name, "float32", (None, 3), "probabilities"),),
                 feature_names=FEATURES, feature_types=("float",) * 4, classes=(0, 1, 2),
                 requires={"ai-edge-litert": ">=1.0"})
    write_manifest(d, m)
    return d


def test_describes_float_tensors_with_signature_names(iris_models):
    for mode in ("fp32", "int8"):
        be = open_backend("tflite", iris_models["files"][mode])
        (inp,), (out,) = be.inputs(), be.outputs()
        # int8 I/O is hidden: callers pass and receive floats
        assert (inp.dtype, inp.shape) == ("float32", (None, 4))
        assert (out.dtype, out.shape) == ("float32", (None, 3))
        assert out.name == "output_0"  # the signature's name, not a graph tensor name
        be.close()


def test_fp32_matches_keras_single_rows_and_batches_of_any_size(iris_models):
    X, want = iris_models["X"], iris_models["keras"]
    be = open_backend("tflite", iris_models["files"]["fp32"])
    name = be.inputs()[0].name
    for i in (0, 60, 149):
        (got,) = be.run({name: X[i:i + 1]})
        np.testing.assert_allclose(got, want[i:i + 1], atol=1e-5)
    # batch sizes change back and forth; single rows in between must stay right
    for n in (150, 7, 1, 7, 33, 1, 150):
        (got,) = be.run({name: X[:n]})
        assert got.shape == (n, 3)
        np.testing.assert_allclose(got, want[:n], atol=1e-5)


def test_int8_io_is_quantized_and_dequantized_by_the_backend(iris_models):
    from ai_edge_litert.interpreter import Interpreter

    X = iris_models["X"]
    path = iris_models["files"]["int8"]
    raw = Interpreter(model_path=str(path))
    raw.allocate_tensors()
    i, o = raw.get_input_details()[0], raw.get_output_details()[0]
    assert i["dtype"] == np.int8 and o["dtype"] == np.int8
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    be = open_backend("tflite", path)
    name = be.inputs()[0].name
    batch = be.run({name: X})[0]
    for r in range(0, 150, 10):
        q = np.clip(np.rint(X[r:r + 1] / si) + zi, -128, 127).astype(np.int8)
        raw.set_tensor(i["index"], q)
        raw.invoke()
        expect = (raw.get_tensor(o["index"]).astype(np.float32) - zo) * so
        np.testing.assert_allclose(be.run({name: X[r:r + 1]})[0], expect, atol=1e-6)
        np.testing.assert_allclose(batch[r:r + 1], expect, atol=1e-6)
    # and it still classifies like the Keras model
    agree = (batch.argmax(1) == iris_models["keras"].argmax(1)).mean()
    assert agree >= 0.9, agree
    assert batch.dtype == np.float32 and np.all(batch >= 0) and np.all(batch <= 1.0 + 1e-6)


def test_dynamic_range_int8_runs_in_litert(iris_models):
    X = iris_models["X"]
    be = open_backend("tflite", iris_models["files"]["dynamic"], BackendOptions(threads=2))
    got = be.run({be.inputs()[0].name: X})[0]
    assert (got.argmax(1) == iris_models["keras"].argmax(1)).mean() >= 0.95


def test_runtime_predict_through_public_api(iris_models, tmp_path):
    X, want = iris_models["X"], iris_models["keras"]
    art = artifact(iris_models["files"]["fp32"], tmp_path / "art")
    with edge_runtime.load(art, threads=1) as rt:
        p = rt.predict(dict(zip(FEATURES, X[100].tolist(), strict=True)))
        assert p.source == "model" and p.value == int(want[100].argmax())
        assert p.probabilities is not None
        assert abs(p.probabilities[int(want[100].argmax())] - float(want[100].max())) < 1e-5
        values = [q.value for q in rt.predict_batch(X)]
        assert values == want.argmax(1).tolist()
        assert rt.health()["backend"] == "tflite"


def test_concurrent_predicts_do_not_mix_rows(iris_models, tmp_path):
    X, want = iris_models["X"], iris_models["keras"].argmax(1)
    art = artifact(iris_models["files"]["fp32"], tmp_path / "art")
    rt = edge_runtime.load(art)
    errors: list[str] = []

    def worker(offset: int) -> None:
        for k in range(300):
            i = (offset * 37 + k) % len(X)
            if k % 50 == 0:
                got = [p.value for p in rt.predict_batch(X[: 5 + offset])]
                if got != want[: 5 + offset].tolist():
                    errors.append(f"batch {offset}")
            elif rt.predict(X[i]).value != want[i]:
                errors.append(f"row {i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rt.close()
    assert errors == []


def test_damaged_file_is_a_load_error(tmp_path, iris_models):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(iris_models["files"]["fp32"].read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="cannot open the model"):
        open_backend("tflite", bad)


def test_wrong_width_input_is_a_backend_error(iris_models):
    be = open_backend("tflite", iris_models["files"]["fp32"])
    with pytest.raises(BackendError, match="tflite"):
        be.run({be.inputs()[0].name: np.zeros((1, 5), np.float32)})


def test_closed_backend_refuses_to_run(iris_models):
    be = open_backend("tflite", iris_models["files"]["fp32"])
    be.close()
    with pytest.raises(BackendError, match="closed"):
        be.run({"keras_tensor": np.zeros((1, 4), np.float32)})


def test_without_litert_the_error_names_the_extra(iris_models, tmp_path, monkeypatch):
    art = artifact(iris_models["files"]["fp32"], tmp_path / "art")
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)  # import now raises ImportError
    with pytest.raises(ModelLoadError) as info:
        edge_runtime.load(art)
    assert "edge-runtime[tflite]" in str(info.value)
    assert "ai-edge-litert" in str(info.value)


def test_old_tflite_runtime_op_version_error_says_what_to_do(tmp_path):
    # The exact failure tflite-runtime 2.14 gives on a dynamic-range int8 model from TF 2.21.
    (tmp_path / "manifest.json").write_text('{"requires": {"ai-edge-litert": ">=1.0"}}')
    exc = ValueError("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version "
                     "of this builtin might be supported. Are you using an old TFLite binary with a newer "
                     "model?\nRegistration failed.\n")
    err = load_error(tmp_path / "model.tflite", "tflite-runtime", exc)
    msg = str(err)
    assert "FULLY_CONNECTED' version '12'" in msg
    assert "requires ai-edge-litert>=1.0" in msg
    assert "pip install 'edge-runtime[tflite]'" in msg

"""The fused single-row path (edge_runtime/fastpath.py) on real ONNX and LiteRT models and the
fake backend: it is the path ``predict`` takes, it answers exactly as the general path and the raw
backend do, no caller ever sees a buffer the next call reuses (threads included), and every
feature (cache, last-good, fallback, breaker, drift, prediction log, deadline) works through it."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.runtime import Runtime
from tests.conftest import write_fake_artifact

HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None and importlib.util.find_spec("tensorflow")


@pytest.fixture(scope="module")
def tflite_iris(tmp_path_factory: pytest.TempPathFactory, keras_iris_mlp: dict[str, Any]) -> Path:
    import tensorflow as tf

    from tests.runtime.test_litert_backend import artifact

    d = tmp_path_factory.mktemp("fast-tflite")
    (d / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_iris_mlp["model"]).convert())
    return artifact(d / "m.tflite", d / "art")


NO_LITERT = "LiteRT (the [tflite] extra) and TensorFlow (to make the model) are not installed"
KINDS = ["onnx-iris", "onnx-regression", "fake",
         pytest.param("tflite-iris", marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_LITERT, reason=NO_LITERT)])]


def onnx_artifact(d: Path, task: str) -> Path:
    """A real ONNX artifact made with skl2onnx (what the device lanes have; no MLflow): logistic
    regression on iris or linear regression on diabetes, with drift reference histograms."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
    from edge_runtime.reference import build_reference

    clf = task == "classification"
    X, y = (load_iris if clf else load_diabetes)(return_X_y=True)
    X = X.astype(np.float32)
    model = (LogisticRegression(max_iter=1000) if clf else LinearRegression()).fit(X, y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}} if clf else None,
                  target_opset={"": 17, "ai.onnx.ml": 3})
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    names = tuple(f"f{i}" for i in range(X.shape[1]))
    outs = [o.name for o in onx.graph.output]
    outputs = ((TensorSpec(outs[0], "int64", (None,), "label"), TensorSpec(outs[1], "float32", (None, 3),
                                                                             "probabilities"))
               if clf else (TensorSpec(outs[0], "float32", (None, 1), "value"),))
    write_manifest(d, Manifest(
        name=task, version="1", backend="onnx", file="model.onnx", sha256=sha256_file(d / "model.onnx"),
        size_bytes=(d / "model.onnx").stat().st_size, task=task,
        inputs=(TensorSpec(onx.graph.input[0].name, "float32", (None, X.shape[1])),), outputs=outputs,
        feature_names=names, feature_types=("float",) * len(names), classes=(0, 1, 2) if clf else None,
        reference=build_reference(X, names, model.predict(X).tolist(), classification=clf)))
    return d


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fast-onnx")
    return {"onnx-iris": onnx_artifact(d / "iris", "classification"),
            "onnx-regression": onnx_artifact(d / "diabetes", "regression")}


@pytest.fixture(params=KINDS)
def art(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    kind = request.param
    if kind.startswith("onnx"):
        return Path(request.getfixturevalue("onnx_models")[kind])
    if kind == "tflite-iris":
        return Path(request.getfixturevalue("tflite_iris"))
    return write_fake_artifact(tmp_path / "fake", features=tuple(f"f{i}" for i in range(4)),
                               weights=[[0.5, -1.0], [1.0, 0.25], [-0.5, 2.0], [0.1, 0.1]], task="classification")


def rows_for(rt: Runtime, n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, size=(n, len(rt.feature_names))).astype(np.float32) + 3.0


def same(a: Any, b: Any) -> bool:
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6)) if isinstance(a, float) else a == b


def test_predict_takes_the_fused_path_and_answers_as_the_general_path_does(art: Path) -> None:
    with edge_runtime.load(art, drift_enabled=False) as rt:
        st = rt.serving
        assert st.predict is not st.predict_general  # the fused path is in use
        for row in rows_for(rt):
            fast, slow = rt.predict(row), st.predict_general(row)
            assert fast.source == slow.source == "model"
            assert same(fast.value, slow.value)
            if slow.probabilities is not None:
                assert np.allclose(list(fast.probabilities.values()), list(slow.probabilities.values()), atol=1e-6)
            named = rt.predict(dict(zip(rt.feature_names, row.astype(float).tolist(), strict=True)))
            assert same(named.value, slow.value)
        batch = rt.predict_batch(rows_for(rt))
        assert all(same(rt.predict(r).value, v) for r, v in zip(rows_for(rt), batch.values, strict=True))


def test_a_caller_never_sees_a_buffer_reused_by_the_next_call_even_across_threads(art: Path) -> None:
    with edge_runtime.load(art, drift_enabled=False) as rt:
        rows = rows_for(rt, 40, seed=1)
        expected = [rt.serving.predict_general(r) for r in rows]
        first = rt.predict(rows[0])
        kept = (first.value, None if first.probabilities is None else dict(first.probabilities))
        for r in rows[1:]:
            rt.predict(r)
        assert (first.value, first.probabilities) == kept
        wrong: list[str] = []

        def worker(k: int) -> None:
            for i in range(300):
                j = (i * 7 + k) % len(rows)
                p = rt.predict(rows[j])
                if not same(p.value, expected[j].value):
                    wrong.append(f"thread {k} row {j}: {p.value} != {expected[j].value}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not wrong, wrong[:3]


def test_cache_drift_and_the_prediction_log_work_through_the_fused_path(art: Path, tmp_path: Path) -> None:
    log = tmp_path / "predictions.jsonl"
    with edge_runtime.load(art, cache_size=100, log_path=str(log), log_sample_rate=1.0, drift_chunk=8) as rt:
        assert rt.serving.predict is not rt.serving.predict_general
        rows = rows_for(rt, 16, seed=2)
        firsts = [rt.predict(r) for r in rows]
        again = [rt.predict(r) for r in rows]
        assert {p.source for p in firsts} == {"model"} and {p.source for p in again} == {"cache"}
        assert [p.value for p in again] == [p.value for p in firsts]
        m = rt.metrics()
        assert m["predictions"]["model"] == 16 and m["predictions"]["cache"] == 16
        assert m["cache"]["hits"] == 16
        rt.flush()
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(records) == 32 and {r["source"] for r in records} == {"model", "cache"}
        logged = np.array(records[0]["features"] if isinstance(records[0]["features"], list)
                          else list(records[0]["features"].values()), dtype=np.float32)
        assert np.allclose(logged, rows[0], atol=1e-5)  # the row as sent, not a later call's buffer
        if rt.drift()["enabled"]:
            assert rt.drift()["window_rows"] >= 16


def test_the_breaker_and_the_fallback_work_through_the_fused_path(art: Path) -> None:
    with edge_runtime.load(art, fallback_default=0, breaker_failures=3, breaker_cooldown_s=60) as rt:
        row = rows_for(rt, 1)[0]
        assert rt.predict(row).source == "model"
        for _ in range(3):
            rt.serving.breaker.failure("backend_error")
        p = rt.predict(row)  # an open breaker sends the call to the general path, which falls back
        assert (p.source, p.reason) == ("fallback", "breaker_open")


def test_a_timeout_uses_the_general_path(art: Path) -> None:
    with edge_runtime.load(art, timeout_ms=500) as rt:
        assert rt.serving.predict == rt.serving.predict_general
        assert rt.predict(rows_for(rt, 1)[0]).source == "model"


def test_a_score_that_overflows_falls_back_without_opening_the_breaker(onnx_models: dict[str, Path]) -> None:
    with edge_runtime.load(onnx_models["onnx-regression"], fallback_default=-1.0) as rt:
        assert rt.serving.predict is not rt.serving.predict_general
        huge = np.full(len(rt.feature_names), 3e38, dtype=np.float32)  # valid float32, the score is not
        for _ in range(10):
            p = rt.predict(huge)
            assert (p.source, p.reason, p.value) == ("fallback", "non_finite_output", -1.0)
        assert rt.health()["breaker"] == "closed"
        assert rt.predict(rows_for(rt, 1)[0]).source == "model"


def test_injected_faults_reach_the_fused_path_and_the_last_good_answer_serves(tmp_path: Path) -> None:
    art = write_fake_artifact(tmp_path / "m", features=("a", "b"))
    with edge_runtime.load(art, fallback_last_good=True, breaker_failures=50) as rt:
        st = rt.serving
        assert st.predict is not st.predict_general
        backend = st.model.backend  # type: ignore[union-attr]
        row = np.array([1.0, 2.0], dtype=np.float32)
        assert rt.predict(row).value == pytest.approx(3.0)
        calls = backend.calls
        backend.fail = RuntimeError("injected")
        p = rt.predict(row)
        assert (p.source, p.reason, p.value) == ("fallback", "backend_error", pytest.approx(3.0))
        assert backend.calls == calls + 1  # the failed call ran once, on the fused path, and was not re-run
        backend.fail = None
        backend.nan = True
        p = rt.predict(row)
        assert (p.source, p.reason) == ("fallback", "non_finite_output")
        backend.nan = False
        backend.wrong_shape = True
        assert rt.predict(row).reason == "bad_output_shape"
        snap = st.breaker.snapshot()  # a backend error and a bad shape count; a non-finite score does not
        assert snap["last_failure"] == "bad_output_shape" and snap["consecutive_failures"] == 1

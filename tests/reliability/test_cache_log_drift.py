"""Prediction cache, prediction log and drift, through the public API."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.reference import build_reference
from tests.conftest import write_fake_artifact

ROW = {"a": 1.0, "b": 2.0}


# -- cache -----------------------------------------------------------------------------------------
def test_cache_hit_miss_and_size_bound(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, cache_size=3) as rt:
        be = rt.model.backend
        assert rt.predict(ROW).source == "model"
        p = rt.predict({"b": 2, "a": 1})  # same validated input
        assert (p.source, p.value, p.model_version) == ("cache", 3.0, "1") and be.calls == 1
        for a in (10.0, 11.0, 12.0):  # three more rows evict the first (LRU, bound 3)
            rt.predict({"a": a, "b": 0.0})
        assert rt.predict(ROW).source == "model"
        c = rt.metrics()["cache"]
        assert (c["hits"], c["misses"], c["size"], c["max_size"]) == (1, 5, 3, 3)
        text = rt.prometheus_text().decode()
        assert 'model_prediction_cache_hits_total{model="fake"} 1.0' in text
        assert 'model_prediction_cache_misses_total{model="fake"} 5.0' in text
        assert 'source="cache"' in text


def test_cache_ttl_expires(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact, cache_size=10, cache_ttl_s=0.1) as rt:
        rt.predict(ROW)
        assert rt.predict(ROW).source == "cache"
        time.sleep(0.15)
        assert rt.predict(ROW).source == "model"


def test_cache_never_serves_another_version(tmp_path: Path) -> None:
    v1 = write_fake_artifact(tmp_path / "v1", version="1")
    v2 = write_fake_artifact(tmp_path / "v2", version="2", weights=[[10.0], [10.0]])
    with edge_runtime.load(v1, cache_size=100) as rt:
        rt.predict(ROW)
        assert rt.predict(ROW).source == "cache"
        old = rt.swap(v2)
        assert old is not None and old.version == "1"
        p = rt.predict(ROW)
        assert (p.source, p.value, p.model_version) == ("model", 30.0, "2")
        assert rt.predict(ROW).value == 30.0
        by_version = rt.metrics()["by_version"]
        assert by_version["1"] == {"model": 1, "cache": 1} and by_version["2"] == {"model": 1, "cache": 1}
        assert 'version="2"' in rt.prometheus_text().decode()
        old.close()


def test_cache_is_off_for_side_inputs_unless_asked(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "m", extra={"side_inputs": ["clock"]})
    with edge_runtime.load(d, cache_size=10) as rt:
        rt.predict(ROW)
        assert rt.predict(ROW).source == "model" and rt.metrics()["cache"]["enabled"] is False
    with edge_runtime.load(d, cache_size=10, cache_side_inputs=True) as rt:
        rt.predict(ROW)
        assert rt.predict(ROW).source == "cache"


# -- prediction log --------------------------------------------------------------------------------
def test_prediction_log_samples_and_records_everything(fake_artifact: Path, tmp_path: Path) -> None:
    path = tmp_path / "log" / "pred.jsonl"
    with edge_runtime.load(fake_artifact, log_path=str(path), log_sample_rate=0.1, fallback_default=0.0) as rt:
        for i in range(100):
            rt.predict({"a": float(i), "b": 1.0})
        rt.model.backend.fail = RuntimeError("down")
        for _ in range(10):
            rt.predict(ROW)
        rt.flush()
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(lines) == 11  # every 10th of 110 calls
        first = lines[0]
        assert first["features"] == {"a": 0.0, "b": 1.0} and first["output"] == 1.0
        assert first["source"] == "model" and first["model_version"] == "1" and first["model"] == "fake"
        assert first["latency_ms"] > 0 and first["time"] > 1.7e9
        assert lines[-1]["source"] == "fallback" and lines[-1]["reason"] in ("backend_error", "breaker_open")


def test_prediction_log_stays_bounded_under_a_flood(fake_artifact: Path, tmp_path: Path) -> None:
    path = tmp_path / "pred.jsonl"
    with edge_runtime.load(fake_artifact, log_path=str(path), log_sample_rate=1.0, log_max_mb=0.05,
                           log_backups=2) as rt:
        def flood() -> None:
            for i in range(3000):
                rt.predict({"a": float(i), "b": 2.0})

        threads = [threading.Thread(target=flood) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rt.flush()
        files = sorted(tmp_path.glob("pred.jsonl*"))
        total = sum(f.stat().st_size for f in files)
        assert [f.name for f in files] == ["pred.jsonl", "pred.jsonl.1", "pred.jsonl.2"]
        assert total <= 0.05 * 1024 * 1024 + 4096
        m = rt.metrics()
        assert m["predictions"]["model"] == 9000
        log = m["prediction_log"]
        assert log["written"] + log["dropped"] == 9000 and log["errors"] == 0
        for f in files:  # every line is whole JSON
            for line in f.read_text().splitlines():
                json.loads(line)


def test_unwritable_log_never_fails_a_prediction(fake_artifact: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with edge_runtime.load(fake_artifact, log_path=str(blocker / "pred.jsonl"), log_sample_rate=1.0) as rt:
        for _ in range(5):
            assert rt.predict(ROW).source == "model"
        rt.flush()
        assert rt.metrics()["prediction_log"]["errors"] >= 1


# -- drift -----------------------------------------------------------------------------------------
@pytest.fixture
def drift_artifact(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal([0.0, 5.0], [1.0, 2.0], size=(2000, 2))
    ref = build_reference(x, ("a", "b"), (x @ np.array([1.0, 1.0])).tolist(), bins=10)
    return write_fake_artifact(tmp_path / "m", reference=ref), rng.normal([0.0, 5.0], [1.0, 2.0], size=(600, 2))


def test_drift_near_zero_on_reference_like_data(drift_artifact: tuple[Path, np.ndarray]) -> None:
    d, live = drift_artifact
    with edge_runtime.load(d, drift_window=500, drift_min_rows=100) as rt:
        events: list[tuple[str, dict]] = []
        rt.subscribe(lambda k, data: events.append((k, data)))
        for row in live:
            rt.predict(row)
        rep = rt.drift()
        assert rep["enabled"] and rep["ready"] and rep["window_rows"] >= 500
        for name in ("a", "b"):
            s = rep["features"][name]
            assert s["psi"] < 0.1 and s["js"] < 0.05 and s["ks"] < 0.1, (name, s)
        assert rep["prediction"]["psi"] < 0.1 and rep["drifted"] == []
        assert not [k for k, _ in events if k == "drift_alert"]


def test_drift_above_threshold_on_shifted_data_raises_one_event(drift_artifact: tuple[Path, np.ndarray]) -> None:
    d, live = drift_artifact
    shifted = live + np.array([2.0, 0.0])  # feature a moves by 2 sd; b stays
    with edge_runtime.load(d, drift_window=500, drift_min_rows=100, drift_chunk=50) as rt:
        events: list[tuple[str, dict]] = []
        rt.subscribe(lambda k, data: events.append((k, data)))
        for row in shifted:
            rt.predict(row)
        rep = rt.drift()
        assert rep["features"]["a"]["psi"] > 0.2 and rep["features"]["a"]["ks"] > 0.2
        assert rep["features"]["b"]["psi"] < 0.1
        assert "a" in rep["drifted"] and "b" not in rep["drifted"]
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(k == "drift_alert" for k, _ in events):
            time.sleep(0.02)
        alerts = [data for k, data in events if k == "drift_alert"]
        assert len(alerts) == 1 and "a" in alerts[0]["scores"] and alerts[0]["method"] == "psi"
        assert 'model_drift_score{feature="a",method="psi",model="fake"}' in rt.prometheus_text().decode()
        assert rt.metrics()["drift"]["drifted"] == rep["drifted"]


def test_drift_js_method_and_batch_rows(drift_artifact: tuple[Path, np.ndarray]) -> None:
    d, live = drift_artifact
    with edge_runtime.load(d, drift_method="js", drift_threshold=0.05, drift_window=300) as rt:
        for start in (0, 100, 200):  # batches up to drift_chunk rows go to the window whole
            rt.predict_batch(live[start:start + 100] * np.array([1.0, 3.0]))
        rep = rt.drift()
        assert rep["method"] == "js" and rep["window_rows"] == 300 and rep["drifted"][:1] == ["b"]


def test_a_large_batch_gives_drift_an_even_sample(drift_artifact: tuple[Path, np.ndarray]) -> None:
    d, live = drift_artifact
    with edge_runtime.load(d, drift_window=1000, drift_chunk=50, drift_min_rows=10) as rt:
        batch = np.resize(live, (400, live.shape[1])) * np.array([1.0, 3.0])
        assert len(rt.predict_batch(batch)) == 400
        rep = rt.drift()
        assert rep["window_rows"] == 50  # every 8th row of 400: scoring stays cheaper than inference
        assert rep["drifted"][:1] == ["b"]


def test_drift_without_reference_says_why(fake_artifact: Path) -> None:
    with edge_runtime.load(fake_artifact) as rt:
        assert rt.drift() == {"enabled": False, "reason": "the manifest has no reference histograms"}


def test_categorical_prediction_reference_in_the_converter_spelling() -> None:
    from edge_runtime.drift import DriftMonitor

    ref = {"rows": 300, "features": {"x": {"kind": "numeric", "edges": [0.0, 0.5, 1.0], "counts": [150, 150]},
                                     "colour": {"kind": "categorical", "counts": {"red": 200, "blue": 100}}},
           "prediction": {"kind": "categorical", "counts": {"0": 150, "1": 150}}}
    mon = DriftMonitor(ref, ["x", "colour"], window=200, min_rows=50)
    assert mon.names == ["x", "__prediction__"]
    rng = np.random.default_rng(0)
    x = np.c_[rng.random(200), np.zeros(200)]
    assert mon.add(x, [0, 1] * 100) == {}  # like the reference: no alert
    shifted = mon.add(x, [1] * 200)  # every prediction the same class: the prediction drifts
    assert set(shifted) == {"__prediction__"}

"""One model lifecycle: a device config means one model for every command, a swap replaces one
serving object, and a command redelivered after a restart runs once."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import httpx
import pytest

import edge_runtime
from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from edge_runtime.store import ModelStore, resolve_artifact
from tests.conftest import run_cli, write_fake_artifact
from tests.mqtt_broker import Broker, Collector, wait_for, write_agent_config
from tests.reliability.test_http import start_serve, stop_serve


@pytest.fixture
def updated_device(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A device config whose store has version 2 active after version 1 was configured (what an
    update leaves behind): (config, v1 dir, data dir)."""
    v1 = write_fake_artifact(tmp_path / "v1", version="1", weights=[[1.0], [1.0]])
    v2 = write_fake_artifact(tmp_path / "v2", version="2", weights=[[2.0], [2.0]])
    data = tmp_path / "data"
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[device]\nid = "d1"\nfleet = "f"\ndata_dir = "{data}"\n[model]\nartifact = "{v1}"\n')
    store = ModelStore(data)
    store.ensure(v1)
    store.activate(store.install(v2))
    return cfg, v1, data


def test_the_resolver_prefers_the_active_version_until_a_new_one_is_configured(
        updated_device: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _cfg, v1, data = updated_device
    assert resolve_artifact(data, v1) == data / "models/fake/2"
    v3 = write_fake_artifact(tmp_path / "v3", version="3")  # the operator configures a new version
    assert resolve_artifact(data, v3) == v3
    assert resolve_artifact(tmp_path / "never-ran", v1) == v1 and not (tmp_path / "never-ran").exists()


def test_predict_with_a_config_uses_the_active_version(updated_device: tuple[Path, Path, Path]) -> None:
    cfg, _, _ = updated_device
    r = run_cli("predict", str(cfg), "--input", "-", stdin=b'{"a": 1, "b": 1}\n')
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[0])
    assert out["model_version"] == "2" and out["value"] == 4.0


@pytest.mark.slow
def test_serve_with_a_config_uses_the_active_version(updated_device: tuple[Path, Path, Path]) -> None:
    cfg, _, _ = updated_device
    proc, url, line = start_serve(cfg)
    try:
        assert "model version 2" in line
        r = httpx.post(f"{url}/predict", json={"features": {"a": 1, "b": 1}}, timeout=10).json()
        assert r["model_version"] == "2" and r["value"] == 4.0
    finally:
        stop_serve(proc)


def test_the_agent_uses_the_active_version(updated_device: tuple[Path, Path, Path]) -> None:
    cfg, _, _ = updated_device
    agent = Agent(load_config(cfg))  # no [mqtt]: serving only
    agent.start()
    try:
        assert agent.runtime is not None and agent.runtime.model_version == "2"
        assert agent.models.models() == [{"name": "fake", "version": "2"}]
    finally:
        agent.stop()


def test_a_crash_loop_rollback_at_start_moves_the_pointer_before_anything_is_reported(
        updated_device: tuple[Path, Path, Path]) -> None:
    from edge_runtime.agent.models import ModelManager
    from edge_runtime.store import ModelRef

    cfg, _, data = updated_device  # version 2 active, in probation, crash-looping
    mm = ModelManager(load_config(cfg))
    rt = mm.start(prefer=ModelRef("fake", "1"))
    try:
        assert mm.versions() == (ModelRef("fake", "1"), None)  # 2 failed: never "previous"
        assert ModelStore(data).active() == ModelRef("fake", "1") and rt.model_version == "1"
    finally:
        mm.close()


def test_a_swap_replaces_one_serving_object_with_its_own_cache_breaker_and_metrics(tmp_path: Path) -> None:
    v1 = write_fake_artifact(tmp_path / "v1", version="1", weights=[[1.0], [1.0]])
    v2 = write_fake_artifact(tmp_path / "v2", version="2", weights=[[2.0], [2.0]])
    with edge_runtime.load(v1, cache_size=16, breaker_failures=2) as rt:
        old = rt.serving
        rt.predict([1.0, 1.0])
        assert rt.predict([1.0, 1.0]).source == "cache"
        old.breaker.failure("backend_error")
        rt.swap(v2)
        new = rt.serving
        assert new is not old and new.version == "2" and old.version == "1"
        for part in ("cache", "breaker", "metrics", "model"):
            assert getattr(new, part) is not getattr(old, part), part
        assert new.breaker.snapshot()["consecutive_failures"] == 0
        p = rt.predict([1.0, 1.0])
        assert p.source == "model" and p.value == 4.0  # v1's cached answer is never served by v2
        # a call that began on the old version still finishes there and still counts
        assert old.predict([1.0, 1.0]).model_version == "1"
        m = rt.metrics()
        assert m["by_version"]["1"]["model"] == 2 and m["by_version"]["1"]["cache"] == 1
        assert m["by_version"]["2"]["model"] == 1 and m["cache"]["hits"] == 1
        assert m["latency_ms"]["window"] == 1  # percentiles describe the version serving now
        text = rt.prometheus_text().decode()
        assert 'source="cache",version="1"} 1.0' in text and 'source="model",version="2"} 1.0' in text


def test_predict_batch_on_the_fallback_path_is_a_prediction_batch(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "c", task="classification", weights=[[1.0, -1.0], [0.0, 0.5]])
    with edge_runtime.load(d, fallback_default={"value": 1, "probabilities": {"0": 0.25, "1": 0.75}},
                           fallback_last_good=True) as rt:
        rt.predict([3.0, 0.0])  # remembered as last good
        rt.model.backend.fail = RuntimeError("bus error")
        batch = rt.predict_batch([[3.0, 0.0], [0.0, 9.0]])
        assert isinstance(batch, edge_runtime.PredictionBatch)
        assert batch.values == [0, 1] and batch.sources == ["fallback", "fallback"]
        assert [p.reason for p in batch] == ["backend_error", "backend_error"]
        assert batch[0].model_version == "1" and batch.probabilities is not None
        assert batch.probabilities.shape == (2, 2) and batch[1].probabilities == {0: 0.25, 1: 0.75}


def test_counters_are_exact_under_threads_without_pickling(tmp_path: Path) -> None:
    """Cache and breaker counts come from plain sharded counters (Python 3.14 removed the
    itertools.count pickling the old code read them through)."""
    import edge_runtime.breaker
    import edge_runtime.cache

    for mod in (edge_runtime.cache, edge_runtime.breaker):
        assert "__reduce__" not in Path(mod.__file__).read_text()
    d = write_fake_artifact(tmp_path / "m")
    with edge_runtime.load(d, cache_size=8) as rt:
        rt.predict([1.0, 2.0])

        def hammer() -> None:
            for _ in range(2000):
                rt.predict([1.0, 2.0])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m = rt.metrics()
        assert m["cache"]["hits"] == 8000 and m["cache"]["misses"] == 1
        assert m["predictions"]["cache"] == 8000 and m["breaker"]["failure_rate"] == 0.0


@pytest.mark.mqtt
def test_a_command_redelivered_after_a_restart_runs_once(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = f"t{uuid.uuid4().hex[:10]}"
    artifact = write_fake_artifact(tmp_path / "artifact")
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=artifact,
                             data_dir=tmp_path / "data", fleet=fleet, device="r1")
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    runs: list[str] = []

    def start() -> Agent:
        agent = Agent(load_config(cfg))
        agent.commands["count"] = lambda cmd: runs.append(cmd["id"]) or {"type": "counted"}  # type: ignore[func-returns-value]
        agent.start()
        assert agent.link is not None and agent.link.wait_connected(10) and agent.link.subscribed.wait(10)
        return agent

    cmd_topic = f"edge/{fleet}/devices/r1/cmd"
    agent = start()
    try:
        col.client.publish(cmd_topic, json.dumps({"cmd": "count", "id": "k1"}), qos=1)
        wait_for(lambda: [e for e in col.json() if e["type"] == "counted"], 10, "first run")
    finally:
        agent.stop()
    # the same command again, as a broker redelivers one whose acknowledgement it never saw
    col.client.publish(cmd_topic, json.dumps({"cmd": "count", "id": "k1"}), qos=1).wait_for_publish(5)
    col.client.publish(cmd_topic, json.dumps({"cmd": "count", "id": "k2"}), qos=1).wait_for_publish(5)
    agent = start()
    try:
        wait_for(lambda: len([e for e in col.json() if e["type"] == "counted"]) >= 2, 10, "k2 runs")
        assert runs == ["k1", "k2"]  # k1 did not run a second time
        assert agent.intake.duplicates == 1
    finally:
        agent.stop()
        col.close()

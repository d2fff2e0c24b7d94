"""MQTT-triggered inference pipelines in the agent, against a real Mosquitto: sensor messages in,
predictions out with correlation keys; bad payloads counted and reported while good ones flow;
alarms only; a rate limit; a broker restarted mid-stream; a model swap; a slow model's backpressure."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from tests.conftest import write_fake_artifact
from tests.mqtt_broker import Broker, Collector, no_delay, wait_for, write_agent_config
from tests.updates_kit import signed_artifact

pytestmark = pytest.mark.mqtt


class Sensors:
    """A plant's sensors: one paho client publishing at QoS 1."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sensors-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = lambda c, *a: no_delay(c)
        self.acked: set[int] = set()
        self.client.on_publish = lambda c, ud, mid, *a: self.acked.add(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[Any] = []

    def send(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1) -> None:
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        self.infos.append(self.client.publish(topic, body, qos=qos))

    def wait_sent(self, timeout: float = 60) -> None:
        """Every message acknowledged by the broker. Not ``wait_for_publish``: it raises at once for
        a message published while the link was down, which paho still sends after the reconnect; so does
        ``is_published``. The PUBACKs themselves are counted (``on_publish``)."""
        wait_for(lambda: all(info.mid in self.acked for info in self.infos), timeout,
                 "the broker's acknowledgements", step=0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pipeline_toml(name: str, **keys: Any) -> str:
    lines = ["[[pipelines]]", f"name = {json.dumps(name)}"]
    for k, v in keys.items():
        if isinstance(v, dict):
            continue
        lines.append(f"{k} = {json.dumps(v)}")
    for k, v in keys.items():
        if isinstance(v, dict):
            lines.append(f"[pipelines.{k}]")
            lines += [f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


class Plant:
    def __init__(self, tmp: Path, broker: Broker, pipelines: str, *, artifact: Path | None = None,
                 out: str = "#") -> None:
        self.tmp, self.broker = tmp, broker
        self.fleet = f"t{uuid.uuid4().hex[:8]}"
        self.artifact = artifact or write_fake_artifact(tmp / "v1")
        self.collector = Collector(broker.port, [f"plant/{self.fleet}/{out}",
                                                 f"edge/{self.fleet}/devices/+/events"]).wait_subscribed()
        cfg = write_agent_config(tmp / "device.toml", port=broker.port, artifact=self.artifact,
                                 data_dir=tmp / "data", fleet=self.fleet,
                                 extra=pipelines.replace("{fleet}", self.fleet))
        self.agent = Agent(load_config(cfg))
        self.agent.start()
        for s in self.agent.pipelines.sessions if self.agent.pipelines else []:
            assert s.link is not None
            wait_for(s.link.subscribed.is_set, 10, "the pipelines' subscription")
        self.sensors = Sensors(broker.port)

    def count(self, suffix: str = "prediction") -> int:
        """Answers arrived (cheap: nothing parsed, so polling it does not starve the agent)."""
        return sum(1 for t, _, _ in list(self.collector.messages) if t.endswith("/" + suffix))

    def outputs(self, suffix: str = "prediction") -> list[dict[str, Any]]:
        return [d for d in self.collector.json(suffix) if "value" in d]

    def events(self) -> list[dict[str, Any]]:
        return [d for d in self.collector.json("events") if d.get("type") == "pipeline_bad_input"]

    def stats(self, name: str) -> dict[str, Any]:
        return dict(self.agent.metrics_snapshot()["pipelines"][name])

    def close(self) -> None:
        self.sensors.close()
        self.agent.stop()
        self.collector.close()


@pytest.fixture
def plant_factory(tmp_path: Path, mosquitto: Broker) -> Iterator[Any]:
    made: list[Plant] = []
    mosquitto.stop()  # saving its database after every message would be the bottleneck here
    mosquitto.save_every_change = False
    mosquitto.start()

    def make(pipelines: str, **kw: Any) -> Plant:
        p = Plant(tmp_path, mosquitto, pipelines, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.mark.slow
def test_ten_thousand_messages_become_ten_thousand_predictions(plant_factory: Any) -> None:
    plant = plant_factory(pipeline_toml("line3", input=["plant/{fleet}/+/telemetry"], path="data", key="msg_id",
                                        output="plant/{fleet}/{1}/prediction", batch_max=64, batch_ms=2),
                          out="+/prediction")
    n = 10_000
    for i in range(n):
        plant.sensors.send(f"plant/{plant.fleet}/m{i % 5}/telemetry",
                           {"msg_id": f"id-{i}", "data": {"a": i, "b": 1.5}, "unit": "mm/s"})
    plant.sensors.wait_sent()
    wait_for(lambda: plant.count() >= n, 60, f"{n} predictions", step=0.2)
    out = plant.outputs()
    by_key = {d["key"]: d for d in out}
    assert set(by_key) == {f"id-{i}" for i in range(n)}
    for i in (0, 1, 4999, n - 1):
        d = by_key[f"id-{i}"]
        assert d["value"] == pytest.approx(i + 1.5, rel=1e-5)
        assert d["source"] == "model" and d["model_version"] == "1"
        assert d["topic"] == f"plant/{plant.fleet}/m{i % 5}/telemetry"
        assert d["latency_ms"] >= 0
    topics = {t for t, _, _ in plant.collector.messages if t.endswith("/prediction")}
    assert topics == {f"plant/{plant.fleet}/m{k}/prediction" for k in range(5)}
    s = plant.stats("line3")
    assert s["received"] == n and s["published"] == n
    assert s["bad"] == s["dropped"] == s["filtered"] == 0
    assert s["latency_ms"]["p50"] is not None and s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
    # the same figures in metrics() and Prometheus /metrics
    assert plant.agent.runtime is not None
    assert plant.agent.runtime.metrics()["pipelines"]["line3"]["published"] == n
    text = plant.agent.runtime.prometheus_text().decode()
    assert f'edge_pipeline_messages_total{{outcome="published",pipeline="line3"}} {float(n)}' in text


def test_bad_payloads_are_counted_and_reported_while_good_ones_flow(plant_factory: Any) -> None:
    plant = plant_factory(pipeline_toml("p", input=["plant/{fleet}/in"], key="k",
                                        output="plant/{fleet}/prediction", max_payload_kb=64))
    bad = [b"{not json", b"\xff\xfe", json.dumps({"k": 1, "a": 1}),  # missing b
           json.dumps({"k": 2, "a": "x", "b": 1}), json.dumps({"k": 3, "a": [1], "b": 1}),
           json.dumps({"k": 4, "a": None, "b": 1}), json.dumps({"k": 5, "a": True, "b": 1}),
           b"[" * 60_000, b"x" * 2**20,  # deep, and 1 MB
           json.dumps([1, 2, 3]), json.dumps("a string"), json.dumps({"k": 6, "a": 1e400, "b": 1})]
    good = 0
    for i in range(300):
        if i % 20 == 0 and bad:
            plant.sensors.send(f"plant/{plant.fleet}/in", bad.pop())
        else:
            plant.sensors.send(f"plant/{plant.fleet}/in", {"k": f"g{i}", "a": i, "b": 0})
            good += 1
    plant.sensors.wait_sent()
    wait_for(lambda: plant.stats("p")["received"] == 300, 30, "every message received")
    wait_for(lambda: plant.stats("p")["published"] == good, 30, "every good message answered")
    s = plant.stats("p")
    assert s["bad"] == 300 - good == 12
    wait_for(lambda: plant.count() >= good, 10, "every answer at the subscriber")
    assert {d["key"] for d in plant.outputs()} == {f"g{i}" for i in range(300) if not (i % 20 == 0 and i < 240)}
    wait_for(lambda: len(plant.events()) >= 5, 15, "pipeline_bad_input events")
    plant.agent.stop()  # what is still counted but not yet reported goes out at the stop
    wait_for(lambda: sum(e["count"] for e in plant.events()) == 12, 15, "every bad payload accounted for")
    reasons = {e["reason"] for e in plant.events()}
    assert {"bad JSON", "missing feature 'b'", "feature 'a' is not a number", "payload over max_payload_kb (64 KB)",
            "expected 2 values, got 3"} <= reasons, reasons
    assert all(e["pipeline"] == "p" and e["topic"] == f"plant/{plant.fleet}/in" for e in plant.events())
    assert max(len(json.dumps(e)) for e in plant.events()) < 1000  # no payload is echoed into an event


def test_a_threshold_pipeline_publishes_only_alarms_and_a_rate_limit_holds(tmp_path: Path, plant_factory: Any) -> None:
    clf = write_fake_artifact(tmp_path / "clf", task="classification", weights=[[1.0, -1.0], [-1.0, 1.0]])
    plant = plant_factory(
        pipeline_toml("alarms", input=["plant/{fleet}/+/vib"], key="id", output="plant/{fleet}/{1}/alarm",
                      when="value == 1 and probabilities.1 >= 0.9")
        + pipeline_toml("limited", input=["plant/{fleet}/+/vib"], key="id", output="plant/{fleet}/all/limited",
                        rate_limit=5.0),
        artifact=clf)
    for i in range(200):  # class 1 when b > a; confident (>= 0.9) only when b - a >= 2
        a, b = (0.0, 3.0) if i % 4 == 0 else (0.0, 0.5) if i % 4 == 1 else (2.0, 0.0)
        plant.sensors.send(f"plant/{plant.fleet}/m{i % 2}/vib", {"id": i, "a": a, "b": b})
    plant.sensors.wait_sent()
    wait_for(lambda: plant.stats("alarms")["published"] + plant.stats("alarms")["filtered"] == 200, 20, "all scored")
    wait_for(lambda: len(plant.outputs("alarm")) >= 50, 10, "the alarms at the subscriber")
    alarms = plant.outputs("alarm")
    assert sorted(d["key"] for d in alarms) == list(range(0, 200, 4))
    assert all(d["value"] == 1 and d["probabilities"]["1"] >= 0.9 for d in alarms)
    assert plant.stats("alarms")["filtered"] == 150
    wait_for(lambda: plant.stats("limited")["published"] + plant.stats("limited")["limited"] == 200, 20, "all")
    s = plant.stats("limited")
    assert 1 <= s["published"] <= 30 and s["limited"] >= 170  # 5/s, a burst of 5, over a few seconds at most


@pytest.mark.slow
def test_a_broker_restart_mid_stream_loses_no_accepted_prediction(plant_factory: Any, mosquitto: Broker) -> None:
    """A restart (SIGTERM: Mosquitto saves its sessions). Not kill -9: Mosquitto itself can then lose
    messages it acknowledged since its last save, two hops here; that is the broker's durability,
    not the pipeline's (a CI run lost a few that way)."""
    plant = plant_factory(pipeline_toml("p", input=["plant/{fleet}/in"], key="k", output="plant/{fleet}/prediction",
                                        qos=1, batch_ms=0))
    n = 3000
    stop = threading.Event()

    def send() -> None:
        for i in range(n):
            plant.sensors.send(f"plant/{plant.fleet}/in", {"k": i, "a": i, "b": 0})
            if i % 100 == 0:
                time.sleep(0.02)
            if stop.is_set():
                return

    t = threading.Thread(target=send)
    t.start()
    wait_for(lambda: plant.stats("p")["published"] >= 800, 30, "the stream under way")
    mosquitto.stop()  # mid-stream
    time.sleep(0.5)
    mosquitto.start()
    t.join(60)
    plant.sensors.wait_sent(60)
    accepted = plant.stats("p")
    wait_for(lambda: plant.stats("p")["received"] >= n, 60, "every message the broker took arrives")
    wait_for(lambda: plant.count() >= n, 60, "the answers")
    wait_for(lambda: {d["key"] for d in plant.outputs()} >= set(range(n)), 60, "a prediction for every message",
             step=0.5)
    accepted = plant.stats("p")
    assert accepted["bad"] == accepted["dropped"] == 0


def test_a_pipeline_keeps_running_across_a_model_swap(tmp_path: Path, plant_factory: Any) -> None:
    plant = plant_factory(pipeline_toml("p", input=["plant/{fleet}/in"], key="k", output="plant/{fleet}/prediction"))
    v2 = write_fake_artifact(tmp_path / "v2", version="2", weights=[[2.0], [2.0]])
    done = threading.Event()

    def stream() -> None:
        i = 0
        while not done.is_set():
            plant.sensors.send(f"plant/{plant.fleet}/in", {"k": i, "a": 1, "b": 1})
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=stream)
    t.start()
    try:
        wait_for(lambda: len(plant.outputs()) >= 100, 20, "answers from version 1")
        assert plant.agent.runtime is not None
        plant.agent.runtime.swap(v2)
        wait_for(lambda: any(d["model_version"] == "2" for d in plant.outputs()), 20, "answers from version 2")
    finally:
        done.set()
        t.join(10)
    plant.sensors.wait_sent()
    wait_for(lambda: plant.stats("p")["published"] == len(plant.sensors.infos), 20, "every message answered")
    wait_for(lambda: plant.count() >= len(plant.sensors.infos), 10, "every answer at the subscriber")
    values = {d["model_version"]: d["value"] for d in plant.outputs()}
    assert values == {"1": pytest.approx(2.0), "2": pytest.approx(4.0)}
    assert plant.stats("p")["bad"] == plant.stats("p")["errors"] == 0


def test_csv_arrays_nested_paths_and_topic_levels_as_features(plant_factory: Any) -> None:
    plant = plant_factory(
        pipeline_toml("csv", input=["plant/{fleet}/+/csv"], format="csv", columns=["id", "b"], key="id",
                      topic_fields={"a": 1}, output="plant/{fleet}/{1}/csv-out")
        + pipeline_toml("arr", input=["plant/{fleet}/arr/#"], path="payload.values", key="meta.seq",
                        output="plant/{fleet}/arr-out/{1}"))
    plant.sensors.send(f"plant/{plant.fleet}/7/csv", "k1, 2.5")
    plant.sensors.send(f"plant/{plant.fleet}/x/csv", "k2,1")  # a topic level that is not a number: bad
    plant.sensors.send(f"plant/{plant.fleet}/arr/a/b", {"payload": {"values": [1, 2]}, "meta": {"seq": 9}})
    wait_for(lambda: len(plant.outputs("csv-out")) == 1 and len(plant.outputs("b")) == 1, 10, "two answers")
    (c,) = plant.outputs("csv-out")
    assert c["key"] == "k1" and c["value"] == pytest.approx(9.5)
    assert [t for t, _, _ in plant.collector.messages if t.endswith("csv-out")] == [f"plant/{plant.fleet}/7/csv-out"]
    (a,) = plant.outputs("b")
    assert a["key"] == 9 and a["value"] == pytest.approx(3.0)
    assert [t for t, _, _ in plant.collector.messages if "/arr-out/" in t] == [f"plant/{plant.fleet}/arr-out/a/b"]
    wait_for(lambda: plant.stats("csv")["bad"] == 1, 10, "the bad topic level counted")


def test_a_slow_model_drops_the_oldest_and_memory_stays_bounded(tmp_path: Path, plant_factory: Any) -> None:
    slow = signed_artifact(tmp_path / "slow", "1", None, delay_s=0.02)  # 20 ms a call
    plant = plant_factory(pipeline_toml("p", input=["plant/{fleet}/in"], key="k", output="plant/{fleet}/prediction",
                                        batch_max=1, batch_ms=0, queue_max=20), artifact=slow)
    for i in range(600):
        plant.sensors.send(f"plant/{plant.fleet}/in", {"k": i, "a": i, "b": 0})
    plant.sensors.wait_sent()
    peak = 0
    end = time.monotonic() + 30
    while time.monotonic() < end:
        s = plant.stats("p")
        peak = max(peak, s["queued"])
        if s["received"] == 600 and s["published"] + s["dropped"] == 600:
            break
        time.sleep(0.01)
    s = plant.stats("p")
    assert s["received"] == 600 and s["published"] + s["dropped"] == 600, s
    assert s["dropped"] > 300 and peak <= 20
    wait_for(lambda: plant.count() >= s["published"], 10, "every published answer at the subscriber")
    keys = [d["key"] for d in plant.outputs()]
    assert 599 in keys  # the newest is kept, the oldest dropped

"""The device agent against a real Mosquitto: status and Last Will, metrics on schedule, no event
lost when the broker or the agent is killed -9, the outbox limit and its drop accounting, commands."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from tests.conftest import run_cli, write_fake_artifact
from tests.mqtt_broker import (
    Broker,
    Collector,
    outbox_rows,
    start_agent_process,
    wait_for,
    write_agent_config,
)

pytestmark = pytest.mark.mqtt


def _fleet() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return write_fake_artifact(tmp_path / "artifact")


def _agent(tmp_path: Path, broker: Broker, artifact: Path, **kw) -> Agent:  # type: ignore[no-untyped-def]
    cfg = write_agent_config(tmp_path / "device.toml", port=broker.port, artifact=artifact,
                             data_dir=tmp_path / "data", **kw)
    return Agent(load_config(cfg))


@pytest.mark.slow
def test_status_is_retained_and_last_will_marks_an_unclean_exit_offline(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=artifact,
                             data_dir=tmp_path / "data", fleet=fleet, device="pi-1")
    status_topic = f"edge/{fleet}/devices/pi-1/status"
    proc = start_agent_process(cfg, tmp_path / "agent.log")
    try:
        watch = Collector(mosquitto.port, [status_topic]).wait_subscribed()
        wait_for(lambda: any(d["state"] == "online" for d in watch.json()), 20, "online status")
        # a late subscriber gets the status from the broker: it is retained
        late = Collector(mosquitto.port, [status_topic]).wait_subscribed()
        wait_for(lambda: late.messages, 5, "retained status")
        _topic, payload, retained = late.messages[0]
        doc = json.loads(payload)
        assert retained and doc["state"] == "online" and doc["models"] == [{"name": "fake", "version": "1"}]
        late.close()

        proc.send_signal(signal.SIGKILL)  # unclean: the broker publishes the Last Will
        proc.wait(10)
        wait_for(lambda: watch.json()[-1]["state"] == "offline", 10, "Last Will")
        assert watch.json()[-1]["reason"] == "connection lost"
        late = Collector(mosquitto.port, [status_topic]).wait_subscribed()
        wait_for(lambda: late.messages, 5, "retained will")
        assert late.messages[0][2] and json.loads(late.messages[0][1])["state"] == "offline"
        late.close()

        # started again, then stopped cleanly with SIGTERM: online, then offline "stopped", exit 0
        proc = start_agent_process(cfg, tmp_path / "agent.log")
        wait_for(lambda: watch.json()[-1]["state"] == "online", 20, "online again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the agent may take up to its stop budget (systemd: TimeoutStopSec=30)
        last = watch.json()[-1]
        assert last["state"] == "offline" and last["reason"] == "stopped"
        watch.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_metrics_arrive_on_schedule_with_runtime_figures(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/metrics"]).wait_subscribed()
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet, metrics_interval_s=0.2)
    agent.start()
    try:
        for i in range(5):
            agent.runtime.predict({"a": float(i), "b": 1.0})
        wait_for(lambda: len(col.json("metrics")) >= 8, 10, "8 metrics snapshots")
    finally:
        agent.stop()
        col.close()
    docs = col.json("metrics")
    ts = [d["ts"] for d in docs]
    assert ts == sorted(ts)  # one timer, in order (its period is not asserted: the machine is shared)
    last = docs[-1]
    assert len({d["id"] for d in docs}) == len(docs) and last["device"] == "dev-1"
    assert last["runtime"]["predictions"]["model"] == 5
    assert last["runtime"]["latency_ms"]["p50"] is not None and last["runtime"]["rates"]["error"] == 0
    assert {"depth", "bytes", "oldest_age_s", "dropped"} <= set(last["outbox"])
    assert last["mqtt"]["acked"] >= 1 and last["agent"]["rss_mb"] > 0


@pytest.mark.slow
def test_broker_killed_mid_stream_every_event_arrives(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet)
    agent.start()
    sent: list[str] = []
    killed = threading.Event()

    def emit() -> None:
        for i in range(300):
            mid = agent.event("test_event", n=i)
            assert mid is not None
            sent.append(mid)
            if i == 100:
                mosquitto.kill()  # kill -9 in the middle of the stream
                killed.set()
            time.sleep(0.003)

    try:
        wait_for(lambda: agent.link.connected, 10, "agent connected")
        t = threading.Thread(target=emit)
        t.start()
        assert killed.wait(20)
        time.sleep(0.5)  # events pile up in the outbox while the broker is gone
        assert not agent.link.connected
        mosquitto.start()
        t.join(30)
        wait_for(lambda: set(sent) <= col.ids("events"), 30, "all 300 events after the broker restart")
        wait_for(lambda: agent.outbox.depth() == 0, 10, "outbox drained")
        assert agent.link.state.connects >= 2
        got = [d for d in col.json("events") if d.get("type") == "test_event"]
        assert {d["n"] for d in got} == set(range(300))
    finally:
        agent.stop()
        col.close()


@pytest.mark.slow
def test_agent_killed_with_events_queued_sends_them_after_restart(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    mosquitto.kill()  # no broker: everything the agent reports stays queued on its disk
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=artifact,
                             data_dir=tmp_path / "data", fleet=fleet, metrics_interval_s=0.1)
    db = tmp_path / "data" / "outbox.db"
    for run in (1, 2):  # two crashes in a row
        proc = start_agent_process(cfg, tmp_path / "agent.log")
        try:
            wait_for(lambda run=run: sum(k == "event" for _, k in outbox_rows(db)) >= run
                     and sum(k == "metrics" for _, k in outbox_rows(db)) >= 3 * run, 20, "queued reports")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    queued = outbox_rows(db)
    events = {i for i, k in queued if k == "event"}
    assert len(events) >= 2 and len(queued) >= 8

    mosquitto.start()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events",
                                     f"edge/{fleet}/devices/+/metrics"]).wait_subscribed()
    proc = start_agent_process(cfg, tmp_path / "agent.log")
    try:
        wait_for(lambda: {i for i, _ in queued} <= col.ids(), 30, "every queued report after the restart")
        # both crashed runs and this one said they started
        wait_for(lambda: len({d["pid"] for d in col.json("events") if d["type"] == "agent_started"}) == 3,
                 10, "three agent_started events")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the agent may take up to its stop budget (systemd: TimeoutStopSec=30)
        col.close()
    assert outbox_rows(db) == []  # acknowledged messages are gone from the disk


def test_outbox_limit_drops_are_counted_and_reported(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    mosquitto.kill()
    # reconnects wait 0.5-1 s: time for the subscriber to be there before the drain starts
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet, outbox_max_mb=0.01, outbox_events_max_mb=0.02,
                   reconnect_min_s=1.0, reconnect_max_s=1.0)
    agent.start()
    try:
        n = 300
        for i in range(n):
            agent.event("reading", n=i, pad="x" * 150)
        remaining = [m for m in agent.outbox.peek(10_000)]
        dropped = agent.outbox.dropped()
        assert dropped["events"] > 0
        assert len(remaining) + dropped["events"] == n + 1  # + agent_started: every event accounted for
        assert agent.outbox.bytes() <= 0.02 * 2**20
        # the newest survive: the oldest were dropped
        kept_n = sorted(json.loads(m.payload)["n"] for m in remaining if b'"reading"' in m.payload)
        assert kept_n == list(range(n - len(kept_n), n))

        mosquitto.start()
        col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/#"]).wait_subscribed()
        wait_for(lambda: {m.id for m in remaining} <= col.ids("events"), 20, "surviving events")
        wait_for(lambda: agent.outbox.depth() == 0, 10, "outbox drained")  # else the snapshot would not fit
        agent.publish_metrics()
        wait_for(lambda: col.json("metrics") and [e for e in col.json("events") if e["type"] == "outbox_overflow"],
                 10, "metrics and overflow event")
        assert col.json("metrics")[-1]["outbox"]["dropped"]["events"] == dropped["events"]
        overflow = next(e for e in col.json("events") if e["type"] == "outbox_overflow")
        assert overflow["dropped_events"] == dropped["events"]
        col.close()
    finally:
        agent.stop()


def test_ping_from_device_group_and_fleet_topics_and_unknown_commands(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet, device="d7", groups=("eu",))
    agent.start()
    try:
        wait_for(lambda: agent.link.connected, 10, "agent connected")
        wait_for(lambda: any(e["type"] == "agent_started" for e in col.json()), 10, "started event")
        assert agent.link.subscribed.wait(10)  # the broker granted the command subscriptions
        topics = [f"edge/{fleet}/devices/d7/cmd", f"edge/{fleet}/groups/eu/cmd", f"edge/{fleet}/all/cmd",
                  f"edge/{fleet}/groups/us/cmd"]
        for i, t in enumerate(topics):
            col.client.publish(t, json.dumps({"cmd": "ping", "id": f"c{i}", "data": i}), qos=1)
        col.client.publish(topics[0], json.dumps({"cmd": "ping", "id": "c0", "data": 0}), qos=1)  # duplicate
        col.client.publish(topics[0], json.dumps({"cmd": "selfdestruct", "id": "x"}), qos=1)
        col.client.publish(topics[0], b"not json", qos=1)
        wait_for(lambda: len([e for e in col.json() if e["type"] == "cmd_rejected"]) >= 2, 10, "rejections")
        # commands run one at a time in arrival order: once this one is answered, all were
        col.client.publish(topics[0], json.dumps({"cmd": "ping", "id": "last"}), qos=1)
        wait_for(lambda: [e for e in col.json() if e["type"] == "pong" and e["cmd_id"] == "last"], 10, "pongs")
        pongs = [e for e in col.json() if e["type"] == "pong" and e["cmd_id"] != "last"]
        assert sorted(p["cmd_id"] for p in pongs) == ["c0", "c1", "c2"]  # not the other group, not twice
        assert {p["echo"] for p in pongs} == {0, 1, 2}
        reasons = [e["reason"] for e in col.json() if e["type"] == "cmd_rejected"]
        assert any("unknown command 'selfdestruct'" in r for r in reasons)
        assert any("unreadable command" in r for r in reasons)
    finally:
        agent.stop()
        col.close()


def test_status_command_shows_connection_outbox_and_last_publish(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    agent = _agent(tmp_path, mosquitto, artifact)
    agent.start()
    cfg = str(agent.cfg.file)
    try:
        wait_for(lambda: agent.publisher.last_ack_at is not None, 10, "first acknowledged publish")
        state = tmp_path / "data/agent-state.json"
        wait_for(lambda: json.loads(state.read_text())["state"] == "connected"
                 and json.loads(state.read_text())["last_publish_at"], 10, "state file: connected, last publish")
        r = run_cli("status", "--config", cfg, "--json")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["agent"] == "running" and s["connection"] == "connected"
        assert s["outbox"]["depth"] == 0 and s["last_publish_at"] is not None
        assert s["active_model"] == {"name": "fake", "version": "1"}
        mosquitto.kill()
        wait_for(lambda: json.loads((tmp_path / "data/agent-state.json").read_text())["state"] == "disconnected",
                 10, "state file says disconnected")
        agent.event("while_offline")
        s = json.loads(run_cli("status", "--config", cfg, "--json").stdout)
        assert s["connection"] == "disconnected" and s["outbox"]["depth"] >= 1
    finally:
        agent.stop()
    r = run_cli("status", "--config", cfg)
    assert r.returncode == 0 and "not running" in r.stdout and "outbox" in r.stdout


@pytest.mark.slow
def test_backlog_drains_oldest_first_while_new_events_flow(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    from edge_runtime.sync.mqtt import json_bytes
    from edge_runtime.sync.outbox import new_id

    fleet = _fleet()
    mosquitto.kill()
    mosquitto.persistence = False  # saving after every message would make the broker the bottleneck
    # reconnects wait 0.5-1 s: time for the subscriber to be there before the drain starts
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet, inflight=20, reconnect_min_s=1.0,
                   reconnect_max_s=1.0)
    agent.start()
    try:
        n = 8000  # queued while the broker was away (draining takes a few seconds: the new ones come during it)
        items = []
        for i in range(n):
            doc = {"id": new_id(), "device": "dev-1", "ts": time.time(), "type": "old", "n": i}
            items.append(("events", json_bytes(doc), "event", doc["id"], None))
        agent.outbox.put_many(items)
        mosquitto.start()
        col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
        assert not agent.link.connected
        assert agent.link.wait_connected(10)
        live = [agent.event("new", n=i) for i in range(5)]
        wait_for(lambda: len(col.messages) >= n + 6, 60, "backlog and new events")
        order = [d for d in col.json("events") if d["type"] in ("old", "new")]
        old_n = [d["n"] for d in order if d["type"] == "old"]
        assert sorted(set(old_n)) == list(range(n))
        first_seen = [old_n.index(i) for i in range(n)]
        assert first_seen == sorted(first_seen)  # oldest first (a duplicate may repeat, never reorder)
        pos = {d["id"]: k for k, d in enumerate(order)}
        last_old = max(k for k, d in enumerate(order) if d["type"] == "old")
        assert set(live) <= set(pos) and min(pos[i] for i in live if i) < last_old  # new ones did not wait
        wait_for(lambda: agent.outbox.depth() == 0, 10, "outbox empty")
        col.close()
    finally:
        agent.stop()


def test_http_predictions_and_runtime_events_are_reported(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    import httpx

    fleet = _fleet()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/#"]).wait_subscribed()
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=artifact,
                             data_dir=tmp_path / "data", fleet=fleet, runtime={"breaker_failures": 3})
    with open(cfg, "a") as f:
        f.write('[http]\nport = 0\nhost = "127.0.0.1"\n')
    agent = Agent(load_config(cfg))
    agent.start()
    try:
        url = f"http://127.0.0.1:{agent.http.port}"
        r = httpx.post(f"{url}/predict", json={"features": {"a": 1.0, "b": 2.0}}, timeout=10)
        assert r.status_code == 200 and r.json()["value"] == pytest.approx(3.0)
        # the model breaks: the runtime opens its breaker and the agent reports it as an event
        agent.runtime.model.backend.fail = RuntimeError("sensor bus down")
        for _ in range(5):
            httpx.post(f"{url}/predict", json={"features": {"a": 1.0, "b": 2.0}}, timeout=10)
        wait_for(lambda: [e for e in col.json("events") if e["type"] == "breaker_open"], 10, "breaker_open event")
        agent.publish_metrics()
        wait_for(lambda: col.json("metrics"), 10, "metrics")
        m = col.json("metrics")[-1]["runtime"]
        assert m["predictions"]["model"] == 1 and m["breaker"]["state"] == "open"
        assert m["rates"]["error"] > 0
    finally:
        agent.stop()
        col.close()


def test_keeps_reconnecting_through_a_long_outage(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    agent = _agent(tmp_path, mosquitto, artifact, reconnect_min_s=0.02, reconnect_max_s=0.08)
    agent.start()
    try:
        assert agent.link.wait_connected(10)
        mosquitto.kill()
        link = agent.link
        wait_for(lambda: link.attempt >= 25, 20, "25 failed reconnect attempts")  # no giving up
        mosquitto.start()
        wait_for(lambda: agent.link.connected, 10, "reconnected after the outage")
        assert link.attempt == 0 and agent.link.state.connects >= 2
    finally:
        agent.stop()


def test_a_command_sent_while_the_device_is_away_waits_for_it(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=artifact,
                             data_dir=tmp_path / "data", fleet=fleet, device="away-1")
    agent = Agent(load_config(cfg))
    agent.start()
    assert agent.link.wait_connected(10)
    wait_for(lambda: any(e["type"] == "agent_started" for e in col.json()), 10, "started")
    agent.stop()  # clean stop; the broker keeps the session (session_expiry_s)
    col.client.publish(f"edge/{fleet}/devices/away-1/cmd", json.dumps({"cmd": "ping", "id": "late"}),
                       qos=1).wait_for_publish(5)
    agent = Agent(load_config(cfg))
    agent.start()
    try:
        wait_for(lambda: [e for e in col.json() if e["type"] == "pong" and e["cmd_id"] == "late"], 10,
                 "the pong for a ping sent while the device was offline")
    finally:
        agent.stop()
        col.close()


def test_a_failing_disk_is_counted_not_raised_at_the_caller(tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    agent = _agent(tmp_path, mosquitto, artifact)
    agent.start()
    try:
        agent.outbox._db.execute("PRAGMA query_only = 1")  # every write now fails like a full disk
        assert agent.event("lost_one") is None
        assert agent.store_errors == 1
        agent.outbox._db.execute("PRAGMA query_only = 0")
        assert agent.event("kept") is not None
        assert agent.metrics_snapshot()["outbox"]["store_errors"] == 1
    finally:
        agent.stop()


def test_a_damaged_outbox_does_not_stop_the_agent_and_its_loss_is_reported(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    import sqlite3

    from edge_runtime.sync.outbox import Outbox

    fleet = _fleet()
    data = tmp_path / "data"
    data.mkdir()
    ob = Outbox(data / "outbox.db")  # ~100 reports queued while the broker was away ...
    for i in range(100):
        ob.put("events", json.dumps({"id": f"old-{i}", "type": "old", "pad": "x" * 400}).encode(), kind="event",
               msg_id=f"old-{i}")
    ob.close()
    with sqlite3.connect(data / "outbox.db") as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray((data / "outbox.db").read_bytes())  # ... then a bad sector in its data pages
    mid = len(raw) // 4096 // 2
    raw[mid * 4096:(mid + 1) * 4096] = b"\x00\xff" * 2048
    (data / "outbox.db").write_bytes(bytes(raw))

    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet)
    agent.start()
    try:
        rec = wait_for(lambda: [e for e in col.json("events") if e.get("type") == "outbox_recovered"], 20,
                       "the recovery reported")[0]
        assert 0 < rec["salvaged"] < 100 and rec["moved_to"].startswith("outbox.db.corrupt-")
        # what was salvaged is delivered too
        wait_for(lambda: len({e["id"] for e in col.json("events") if e.get("type") == "old"}) == rec["salvaged"],
                 20, "the salvaged reports")
    finally:
        agent.stop()
        col.close()


def test_a_stop_keeps_to_one_budget_with_a_hung_command_and_no_broker(
        tmp_path: Path, mosquitto: Broker, artifact: Path) -> None:
    fleet = _fleet()
    agent = _agent(tmp_path, mosquitto, artifact, fleet=fleet, shutdown_flush_s=30)
    started = threading.Event()

    def hang(cmd: dict) -> None:  # type: ignore[type-arg]
        started.set()
        time.sleep(20)

    agent.commands["hang"] = hang
    agent.start()
    try:
        wait_for(lambda: agent.link.connected and agent.link.subscribed.is_set(), 10, "agent subscribed")
        col = Collector(mosquitto.port, [f"edge/{fleet}/none"]).wait_subscribed()
        col.client.publish(f"edge/{fleet}/devices/dev-1/cmd", json.dumps({"cmd": "hang", "id": "h"}), qos=1)
        assert started.wait(10)
        col.close()
        mosquitto.kill()  # nothing can be flushed now
        for i in range(20):
            agent.event("queued", i=i)
    finally:
        t0 = time.monotonic()
        agent.stop(budget_s=4)
        took = time.monotonic() - t0
    # each part used to wait its own timeout: the hung command 5 s + flush 30 s + more
    assert took < 6, took
    assert len(outbox_rows(tmp_path / "data" / "outbox.db")) >= 20  # kept for the next start, not lost

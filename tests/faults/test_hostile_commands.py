"""Hostile commands against a running agent: whatever arrives on its cmd topic (random bytes,
broken or deeply nested JSON, odd encodings and types, oversized payloads, forged updates), it
stays up, answers ``ping`` afterwards, and answers each bad command with one bounded event."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from tests.conftest import write_fake_artifact
from tests.mqtt_broker import Broker, Collector, wait_for, write_agent_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow, pytest.mark.faults]

ANSWERS = {"cmd_rejected", "cmd_failed", "update_refused", "keys_refused", "pong", "ping_done"}

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                     max_leaves=20)
_names = st.sampled_from(["ping", "update", "rollback", "keys", "reboot", "", "x" * 5000, "\ud800", "ünïcode"]) \
    | st.text(max_size=50) | st.integers() | st.lists(st.integers(), max_size=3) | st.none()
_bodies = st.dictionaries(st.sampled_from(["doc", "signatures", "data"]), _json, max_size=3)


def _command(name: Any, body: dict[str, Any], cid: str) -> bytes:
    return json.dumps({"cmd": name, "id": cid, **body}).encode("utf-8", "surrogatepass")


_commands = st.builds(_command, _names, _bodies, st.uuids().map(str))
_payloads = (st.binary(max_size=200) | _commands | _json.map(lambda v: json.dumps(v).encode())
             | st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)  # nesting
             | st.sampled_from([b"", b"\xff\xfe\xfd", b'{"cmd": "ping"', b"null", b"[]",
                                b'{"cmd": "ping", "pad": "' + b"x" * 300_000 + b'"}']))


def _collect(n: int) -> list[bytes]:
    out: list[bytes] = []

    @settings(max_examples=n, database=None, deadline=None)
    @given(_payloads)
    def gen(p: bytes) -> None:
        out.append(p)

    gen()
    return out


def _expected_answers(payloads: list[bytes]) -> int:
    from edge_runtime.agent.commands import parse

    seen: set[str] = set()
    n = 0
    for p in payloads:
        try:
            cid = parse(p).get("id")
        except ValueError:
            n += 1
            continue
        if isinstance(cid, str) and 0 < len(cid) <= 200:
            if cid in seen:
                continue
            seen.add(cid)
        n += 1
    return n


def test_the_agent_survives_any_command_and_answers_each_once(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = f"t{uuid.uuid4().hex[:8]}"
    art = write_fake_artifact(tmp_path / "art")
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=art, data_dir=tmp_path / "data",
                             fleet=fleet, device="pi-1", outbox_sync="normal")
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/pi-1/events"]).wait_subscribed()
    agent = Agent(load_config(cfg))
    agent.start()
    try:
        assert agent.link is not None and agent.link.wait_connected(10)
        wait_for(lambda: agent.link.subscribed.is_set(), 10, "subscribed")
        payloads = _collect(200)
        for p in payloads:
            col.client.publish(f"edge/{fleet}/devices/pi-1/cmd", p, qos=1).wait_for_publish(10)
        probe = str(uuid.uuid4())
        col.client.publish(f"edge/{fleet}/devices/pi-1/cmd", json.dumps({"cmd": "ping", "id": probe}), qos=1)
        wait_for(lambda: any(e.get("cmd_id") == probe for e in col.json("events")), 60, "the agent answering ping")

        answers: list[dict[str, Any]] = [e for e in col.json("events") if e.get("type") != "agent_started"]
        unexpected = {e["type"] for e in answers} - ANSWERS
        assert not unexpected, unexpected
        # one answer per command; a readable command whose id was handled before is not run or
        # answered again (that is the dedupe a redelivery needs)
        assert len(answers) == _expected_answers(payloads) + 1, (len(answers), len(payloads))
        sizes = [len(json.dumps(e)) for e in answers]
        assert max(sizes) < 4096, max(sizes)  # bounded: nothing of a 300 KB payload is echoed
        assert agent.runtime is not None and agent.runtime.predict([1.0, 2.0]).source == "model"
    finally:
        agent.stop()
        col.close()


def test_commands_arriving_during_shutdown_log_no_traceback(tmp_path: Path, mosquitto: Broker,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import threading

    fleet = f"t{uuid.uuid4().hex[:8]}"
    art = write_fake_artifact(tmp_path / "art")
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=art, data_dir=tmp_path / "data",
                             fleet=fleet, device="pi-1")
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"s-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    agent = Agent(load_config(cfg))
    agent.start()
    assert agent.link is not None and agent.link.wait_connected(10)
    stop = threading.Event()

    def spam() -> None:
        i = 0
        while not stop.is_set():
            sender.publish(f"edge/{fleet}/devices/pi-1/cmd", json.dumps({"cmd": "ping", "id": f"c{i}"}), qos=1)
            i += 1

    t = threading.Thread(target=spam)
    caplog.set_level(logging.WARNING)
    t.start()
    try:
        import time

        time.sleep(0.5)
        agent.stop()  # while commands keep coming
    finally:
        stop.set()
        t.join(5)
        sender.disconnect()
        sender.loop_stop()
    bad = [r for r in caplog.records if r.exc_info or "cannot schedule" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]

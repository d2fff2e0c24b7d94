"""TLS with certificates made in the test, and the shipped Mosquitto config and ACL: a device
publishes and reads only its own topics (and its groups' commands)."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from edge_runtime.sync.mqtt import MqttLink
from tests.conftest import ROOT, write_fake_artifact
from tests.mqtt_broker import MOSQUITTO, Broker, Collector, free_port, make_certs, wait_for, write_agent_config

pytestmark = [pytest.mark.mqtt,
              pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason=f"mosquitto is not installed at {MOSQUITTO}")]


def test_agent_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", clients=("dev-tls", "watcher"))
    broker = Broker(tmp_path / "broker", tls=certs, require_certificate=True, persistence=False).start()
    fleet = f"t{uuid.uuid4().hex[:8]}"
    try:
        watch = Collector(broker.port, [f"edge/{fleet}/devices/+/#"],
                          tls={"cafile": certs["cafile"], "certfile": certs["watcher.crt"],
                               "keyfile": certs["watcher.key"]}).wait_subscribed()
        cfg = write_agent_config(tmp_path / "device.toml", port=broker.port, device="dev-tls", fleet=fleet,
                                 artifact=write_fake_artifact(tmp_path / "art"), data_dir=tmp_path / "data",
                                 tls=True, ca_file=certs["cafile"], cert_file=certs["dev-tls.crt"],
                                 key_file=certs["dev-tls.key"])
        agent = Agent(load_config(cfg))
        agent.start()
        try:
            wait_for(lambda: any(d.get("state") == "online" for d in watch.json("status")), 15, "online over TLS")
            wait_for(lambda: any(d.get("type") == "agent_started" for d in watch.json("events")), 10, "event")
        finally:
            agent.stop()
        watch.close()

        # without a client certificate, or trusting another CA, the device never gets in
        other = make_certs(tmp_path / "other-ca", clients=())
        for name, kw in (("no client cert", {}),
                         ("wrong CA", {"ca_file": str(other["cafile"]), "cert_file": str(certs["dev-tls.crt"]),
                                       "key_file": str(certs["dev-tls.key"])})):
            cfg2 = write_agent_config(tmp_path / f"bad-{len(name)}.toml", port=broker.port, device="dev-x",
                                      artifact=tmp_path / "art", data_dir=tmp_path / "d2", tls=True,
                                      **{"ca_file": str(certs["cafile"]), **kw})
            m = load_config(cfg2).mqtt
            assert m is not None
            link = MqttLink(m, client_id="dev-x", will_topic="edge/x/devices/dev-x/status", will_payload=b"{}")
            link.start()
            try:
                wait_for(lambda link=link: link.state.last_error, 10, f"a refused connection ({name})")
                assert not link.connected, name
            finally:
                link.stop()
    finally:
        broker.stop()


def _shipped_broker(tmp_path: Path, certs: dict[str, Path], users: dict[str, str]) -> Broker:
    """Start mosquitto from scripts/mosquitto/mosquitto.conf with only paths and port changed."""
    conf = (ROOT / "scripts/mosquitto/mosquitto.conf").read_text()
    d = tmp_path / "broker"
    d.mkdir()
    passwd = d / "passwd"
    for i, (user, pw) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw], check=True,
                       capture_output=True)
    port = free_port()
    repl = {r"^listener 8883$": f"listener {port} 127.0.0.1",
            r"^cafile .*": f"cafile {certs['cafile']}", r"^certfile .*": f"certfile {certs['certfile']}",
            r"^keyfile .*": f"keyfile {certs['keyfile']}", r"^password_file .*": f"password_file {passwd}",
            r"^acl_file .*": f"acl_file {ROOT / 'scripts/mosquitto/edge-runtime.acl'}",
            r"^persistence_location .*": f"persistence_location {d}/"}
    for pat, new in repl.items():
        conf, n = re.subn(pat, new, conf, flags=re.M)
        assert n == 1, pat
    broker = Broker(d, port=port)
    broker.write_config = lambda: (broker.conf_path.write_text("user root\n" + conf), broker.conf_path)[1]  # type: ignore[method-assign]
    return broker.start()


def _client(port: int, certs: dict[str, Path], user: str, password: str, cert: str) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes]] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    c.tls_set(ca_certs=str(certs["cafile"]), certfile=str(certs[f"{cert}.crt"]), keyfile=str(certs[f"{cert}.key"]))
    c.username_pw_set(user, password)
    c.on_message = lambda cl, ud, msg: got.append((msg.topic, bytes(msg.payload)))
    c.got = got
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    return c


@pytest.mark.slow
def test_shipped_config_and_acl_confine_each_device_to_its_topics(tmp_path: Path) -> None:
    a, b = "pi4-kitchen-01", "pi5-line-03"  # the devices named in the shipped ACL (fleet acme)
    users = {a: "pw-a", b: "pw-b", "fleet-ops": "pw-ops"}
    certs = make_certs(tmp_path / "certs", clients=(a, b, "fleet-ops"))
    broker = _shipped_broker(tmp_path, certs, users)
    try:
        ops = Collector(broker.port, ["edge/acme/devices/+/events", "edge/acme/devices/+/status",
                                      "edge/acme/devices/+/desired", "edge/acme/artifacts/+/request"],
                        tls={"cafile": certs["cafile"], "certfile": certs["fleet-ops.crt"],
                             "keyfile": certs["fleet-ops.key"]}, username="fleet-ops",
                        password="pw-ops").wait_subscribed()
        dev_a = _client(broker.port, certs, a, "pw-a", a)
        wait_for(dev_a.is_connected, 10, "device a connected")

        # publishing: the forged report under b's topic is dropped by the broker; a's own arrives
        dev_a.publish(f"edge/acme/devices/{b}/events", json.dumps({"id": "forged"}), qos=1).wait_for_publish(5)
        dev_a.publish(f"edge/acme/devices/{a}/events", json.dumps({"id": "mine"}), qos=1).wait_for_publish(5)
        # a device cannot set anybody's desired state, its own included; it can ask for chunks
        dev_a.publish(f"edge/acme/devices/{a}/desired", json.dumps({"id": "self-update"}), qos=1).wait_for_publish(5)
        dev_a.publish("edge/acme/artifacts/abc/request", json.dumps({"id": "chunk-request"}), qos=1).wait_for_publish(5)
        wait_for(lambda: {"mine", "chunk-request"} <= ops.ids(), 10, "a's own event and its chunk request")
        assert "forged" not in ops.ids() and "self-update" not in ops.ids()

        # reading: a gets its own, its groups' and the fleet's commands, not b's or b's group's
        topics = {f"edge/acme/devices/{a}/cmd": True, "edge/acme/groups/eu/cmd": True,
                  "edge/acme/groups/pi4/cmd": True, "edge/acme/all/cmd": True,
                  f"edge/acme/devices/{b}/cmd": False, "edge/acme/groups/pi5/cmd": False,
                  f"edge/acme/devices/{a}/desired": True, "edge/acme/groups/eu/desired": True,
                  "edge/acme/all/desired": True, f"edge/acme/devices/{b}/desired": False,
                  "edge/acme/groups/pi5/desired": False, "edge/acme/artifacts/abc/chunks": True}
        granted: list[Any] = []
        dev_a.on_subscribe = lambda cl, ud, mid, rcs, pr: granted.extend(rcs)
        r = dev_a.subscribe([(t, 1) for t in topics])
        assert r[0] == 0
        wait_for(lambda: granted, 10, "SUBACK")
        for t in topics:
            ops.client.publish(t, json.dumps({"cmd": "ping", "to": t}), qos=1).wait_for_publish(5)
        # a last command on a's own topic: delivered in order, so everything before it has arrived
        own = f"edge/acme/devices/{a}/cmd"
        ops.client.publish(own, json.dumps({"cmd": "ping", "to": "last"}), qos=1).wait_for_publish(5)
        wait_for(lambda: any(b'"last"' in p for _, p in dev_a.got), 10, "a's commands")
        got = [t for t, p in dev_a.got if b'"last"' not in p]
        assert sorted(got) == sorted(t for t, ok in topics.items() if ok)

        # wrong password: refused
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        bad = paho.Client(CallbackAPIVersion.VERSION2, client_id="intruder", protocol=paho.MQTTv5)
        bad.tls_set(ca_certs=str(certs["cafile"]), certfile=str(certs[f"{b}.crt"]), keyfile=str(certs[f"{b}.key"]))
        bad.username_pw_set(b, "wrong")
        codes: list[Any] = []
        bad.on_connect = lambda cl, ud, fl, rc, pr: codes.append(rc)
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        wait_for(lambda: codes, 10, "a CONNACK")
        assert codes[0].is_failure
        bad.loop_stop()
        dev_a.loop_stop()
        ops.close()
    finally:
        broker.stop()

"""``edge-runtime doctor``: every check passes on a good device, and each failing check says
what is wrong and how to fix it, with a real Mosquitto."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edge_runtime.doctor import run_checks
from tests.conftest import run_cli
from tests.mqtt_broker import Broker, free_port, make_certs
from tests.updates_kit import device_config, make_keys, signed_artifact

pytestmark = pytest.mark.mqtt


def _checks(cfg: Path) -> dict[str, tuple[str, str]]:
    return {c.name: (c.level, c.detail) for c in run_checks(cfg, timeout_s=3)}


@pytest.fixture
def device(tmp_path: Path, mosquitto: Broker) -> Path:
    keys = make_keys(tmp_path / "keys")
    art = signed_artifact(tmp_path / "art", "1", keys)
    return device_config(tmp_path / "device.toml", port=mosquitto.port, fleet=f"t{uuid.uuid4().hex[:6]}",
                         artifact=art, data_dir=tmp_path / "data", keys=keys)


def test_a_good_device_passes_every_check(device: Path) -> None:
    r = run_cli("doctor", "--config", str(device))
    assert r.returncode == 0, r.stdout + r.stderr
    names = [line.split(":")[0].split(None, 1)[1] for line in r.stdout.strip().splitlines()]
    assert names == ["config", "data dir", "artifact", "signature", "model", "broker", "broker credentials",
                     "broker ACL", "clock", "outbox"]
    assert all(line.startswith(("OK", "WARN")) for line in r.stdout.splitlines()), r.stdout


def test_each_failure_names_the_fix(device: Path, tmp_path: Path) -> None:
    text = device.read_text()
    # a tampered artifact
    art = Path(text.split('artifact = "')[1].split('"')[0])
    (art / "model.json").write_bytes((art / "model.json").read_bytes() + b" ")
    c = _checks(device)
    assert c["artifact"][0] == "FAIL" and "size mismatch" in c["artifact"][1] and "copy" in c["artifact"][1]
    # a broker nobody listens on
    device.write_text(text.replace(f"port = {text.split('port = ')[1].split()[0]}", f"port = {free_port()}"))
    c = _checks(device)
    assert c["broker"][0] == "FAIL" and "check [mqtt] host and port" in c["broker"][1]
    # a config that is not valid
    device.write_text(text + "\n[mqtt2]\n")
    c = _checks(device)
    assert c["config"][0] == "FAIL" and "unknown section" in c["config"][1]
    r = run_cli("doctor", "--config", str(device))
    assert r.returncode == 1 and r.stdout.startswith("FAIL config:")


def test_an_unsigned_artifact_fails_where_keys_are_configured(device: Path) -> None:
    art = Path(device.read_text().split('artifact = "')[1].split('"')[0])
    (art / "manifest.sig").unlink()
    c = _checks(device)
    assert c["signature"][0] == "FAIL" and "edge-runtime sign" in c["signature"][1]


@pytest.mark.slow
def test_wrong_credentials_and_a_denied_topic_fail_with_the_fix(tmp_path: Path) -> None:
    """The shipped broker config (TLS, passwords, ACL): a wrong password, then a device id that
    is not its MQTT username, so the ACL's %u lines do not let it write its own events."""
    from tests.sync.test_broker_security import _shipped_broker

    users = {"pi4-kitchen-01": "pw-a"}
    certs = make_certs(tmp_path / "certs", clients=("pi4-kitchen-01",))
    broker = _shipped_broker(tmp_path, certs, users)
    try:
        keys = make_keys(tmp_path / "keys")
        art = signed_artifact(tmp_path / "art", "1", keys)
        (tmp_path / "pw").write_text("wrong")
        cfg = device_config(tmp_path / "device.toml", port=broker.port, fleet="acme", artifact=art,
                            data_dir=tmp_path / "data", keys=keys, device="pi4-kitchen-01")
        tls = (f'[mqtt]\ntls = true\nusername = "pi4-kitchen-01"\npassword_file = "{tmp_path / "pw"}"\n'
               f'ca_file = "{certs["cafile"]}"\ncert_file = "{certs["pi4-kitchen-01.crt"]}"\n'
               f'key_file = "{certs["pi4-kitchen-01.key"]}"\n')
        cfg.write_text(cfg.read_text().replace("[mqtt]\n", tls).replace('host = "127.0.0.1"', 'host = "localhost"'))
        c = _checks(cfg)
        assert c["broker"][0] == "OK" and "TLS" in c["broker"][1]
        assert c["broker credentials"][0] == "FAIL" and "password_file" in c["broker credentials"][1]
        (tmp_path / "pw").write_text("pw-a")
        c = _checks(cfg)
        assert c["broker credentials"][0] == "OK" and c["broker ACL"][0] == "OK"
        cfg.write_text(cfg.read_text().replace('id = "pi4-kitchen-01"', 'id = "pi4-renamed"'))
        c = _checks(cfg)
        assert c["broker ACL"][0] == "FAIL" and "devices/pi4-renamed/events" in c["broker ACL"][1]
        assert "username must be the device id" in c["broker ACL"][1]
    finally:
        broker.stop()


def test_pipeline_brokers_are_checked(device: Path, mosquitto: Broker) -> None:
    dead = free_port()
    device.write_text(device.read_text() + f"""
[[pipelines]]
name = "shared"
input = ["s/+"]
output = "o/{{1}}"
[[pipelines]]
name = "plant"
input = ["p/+"]
output = "q/{{1}}"
[pipelines.mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
[[pipelines]]
name = "gone"
input = ["g"]
output = "h"
[pipelines.mqtt]
host = "127.0.0.1"
port = {dead}
""")
    c = _checks(device)
    assert c["pipelines"][0] == "OK" and "shared on the device's broker" in c["pipelines"][1]
    assert c["pipeline plant broker"][0] == "OK"
    assert c["pipeline gone broker"][0] == "FAIL" and "[pipelines.mqtt] of pipelines[2] host and port" in \
        c["pipeline gone broker"][1]

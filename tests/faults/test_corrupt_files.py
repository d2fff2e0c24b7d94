"""The corrupt-file matrix: with any one of the agent's files damaged, a real agent process
starts, serves, connects and says what it found. (Fault suite; the model-store cases with a
good copy elsewhere are in tests/updates.)"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.mqtt_broker import Broker, Collector, start_agent_process, wait_for
from tests.updates_kit import device_config, make_keys, signed_artifact

pytestmark = [pytest.mark.mqtt, pytest.mark.slow, pytest.mark.faults]


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = b"\xff\x00" * 32
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


CASES: dict[str, tuple[str, Callable[[Path], None], str | None]] = {
    # file under data_dir, what is done to it, the event the agent must report (None: nothing to say)
    "outbox header": ("outbox.db", lambda p: p.write_bytes(b"garbage" * 1000), "outbox_recovered"),
    "outbox data pages": ("outbox.db", _garble, None),  # may land in free space: reported when it matters
    "outbox WAL": ("outbox.db-wal", lambda p: p.write_bytes(b"\x37" * 8192), None),
    "agent state file": ("agent-state.json", _truncate, None),
    "update state": ("updates/state.json", _truncate, "update_state_recovered"),
    "active pointer": ("models/active.json", _truncate, "model_rebuilt"),
    "model file": ("models/fake/1/model.json", _truncate, "model_rebuilt"),
    "manifest": ("models/fake/1/manifest.json", _truncate, "model_rebuilt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_agent_comes_up_and_reports_with_a_damaged_file(tmp_path: Path, mosquitto: Broker, case: str) -> None:
    rel, damage, expected = CASES[case]
    fleet = f"t{uuid.uuid4().hex[:8]}"
    keys = make_keys(tmp_path / "keys")
    v1 = signed_artifact(tmp_path / "v1", "1", keys)
    data = tmp_path / "data"
    cfg = device_config(tmp_path / "device.toml", port=mosquitto.port, fleet=fleet, artifact=v1, data_dir=data,
                        keys=keys)
    log = tmp_path / "agent.log"
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events", f"edge/{fleet}/devices/+/status"])
    col.wait_subscribed()
    proc = start_agent_process(cfg, log)  # a first run creates every file
    wait_for(lambda: any(e.get("type") == "agent_started" for e in col.json("events")), 20, "first start")
    if rel == "updates/state.json":  # as an accepted update leaves it
        (data / "updates").mkdir(exist_ok=True)
        (data / "updates" / "state.json").write_text(json.dumps({"sequences": {"all": 5}}))
    if rel == "outbox.db-wal":
        proc.send_signal(signal.SIGKILL)  # a WAL exists after an unclean stop
    else:
        proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    target = data / rel
    if not target.exists():
        target.write_bytes(b"")
    damage(target)

    before = len(col.json("events"))
    proc = start_agent_process(cfg, log)
    try:
        wait_for(lambda: sum(e.get("type") == "agent_started" for e in col.json("events")) >= 2, 30,
                 f"a second start with a damaged {case}\n" + log.read_text()[-3000:])
        assert proc.poll() is None, log.read_text()[-3000:]
        new = [e["type"] for e in col.json("events")[before:]]
        if expected:
            wait_for(lambda: expected in [e["type"] for e in col.json("events")[before:]], 10,
                     f"{expected} event (got {new})")
        r = run_cli("predict", str(cfg), "--input", "-", stdin=b"[1.0, 2.0]")
        assert r.returncode == 0 and json.loads(r.stdout)["value"] == pytest.approx(3.0), r.stderr
        status = wait_for(lambda: [s for s in col.json("status") if s.get("state") == "online"], 10, "online")
        assert status[-1]["active"]["version"] == "1"
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()[-2000:]
        col.close()

"""A full disk under a real agent process: its data dir on a small tmpfs that the test fills up
while the agent reports, answers commands and stops. (Mounting needs root: CI runs as root; a
developer's unprivileged run skips with that reason.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_fake_artifact
from tests.mqtt_broker import Broker, Collector, start_agent_process, wait_for, write_agent_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow, pytest.mark.faults]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the fault suite as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): a container without CAP_SYS_ADMIN")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_never_stops_the_agent_and_it_recovers_when_space_returns(
        tmp_path: Path, mosquitto: Broker, small_disk: Path) -> None:
    fleet = f"t{uuid.uuid4().hex[:8]}"
    art = write_fake_artifact(tmp_path / "art")
    cfg = write_agent_config(tmp_path / "device.toml", port=mosquitto.port, artifact=art, data_dir=small_disk / "data",
                             fleet=fleet, device="pi-1", metrics_interval_s=0.2)
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/pi-1/events", f"edge/{fleet}/devices/pi-1/metrics"])
    col.wait_subscribed()
    log = tmp_path / "agent.log"
    proc = start_agent_process(cfg, log)
    try:
        wait_for(lambda: col.json("metrics"), 20, "metrics flowing")
        filler = _fill(small_disk)
        cmd = f"edge/{fleet}/devices/pi-1/cmd"
        probes = [str(uuid.uuid4()) for _ in range(3)]
        for p in probes:  # commands while the disk is full
            col.client.publish(cmd, json.dumps({"cmd": "ping", "id": p}), qos=1).wait_for_publish(5)
        n_metrics = len(col.json("metrics"))
        import time

        time.sleep(2.0)  # reporting goes on trying while full
        assert proc.poll() is None, log.read_text()[-3000:]

        filler.unlink()  # space returns
        wait_for(lambda: {e.get("cmd_id") for e in col.json("events")} >= set(probes), 30,
                 "every command answered once space returned\n" + log.read_text()[-2000:])
        wait_for(lambda: len(col.json("metrics")) > n_metrics + 3, 20, "metrics flowing again")
        lost = wait_for(lambda: [e for e in col.json("events") if e.get("type") == "reports_lost"], 10,
                        "the loss reported")
        assert lost[0]["count"] >= 5 and "full" in lost[0]["reason"]  # snapshots every 0.2 s for 2 s

        _fill(small_disk)  # and a clean stop on a full disk still ends cleanly
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        col.close()

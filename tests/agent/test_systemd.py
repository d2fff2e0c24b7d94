"""The agent under systemd's notify protocol, with a fake notify socket (a real systemd is not
on CI): READY=1 once it serves, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_fake_artifact
from tests.mqtt_broker import free_port, start_agent_process, write_agent_config


def test_ready_watchdog_and_stopping_are_sent(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    art = write_fake_artifact(tmp_path / "art")
    # no broker listening: READY must not wait for it
    cfg = write_agent_config(tmp_path / "device.toml", port=free_port(), artifact=art, data_dir=tmp_path / "data")
    old = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    os.environ.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    try:
        proc = start_agent_process(cfg, tmp_path / "agent.log")
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    got: list[tuple[float, str]] = []

    def read_until(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                pass

    try:
        read_until(lambda: any(m.startswith("READY=1") for _, m in got), 20)
        assert any(m.startswith("READY=1") and "STATUS=serving fake version 1" in m for _, m in got), got
        t_ready = next(t for t, m in got if m.startswith("READY=1"))
        read_until(lambda: sum(m == "WATCHDOG=1" for _, m in got) >= 5, 10)
        pings = [t for t, m in got if m == "WATCHDOG=1" and t > t_ready]
        assert len(pings) >= 5
        proc.send_signal(signal.SIGTERM)
        read_until(lambda: any(m == "STOPPING=1" for _, m in got), 10)
        assert any(m == "STOPPING=1" for _, m in got)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_the_unit_file_is_a_notify_service_with_a_watchdog_and_a_read_only_system() -> None:
    unit = (ROOT / "scripts" / "systemd" / "edge-runtime.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=edge-runtime", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/edge-runtime", "NoNewPrivileges=true"):
        assert line in unit, line


@pytest.mark.parametrize("env", [{}, {"JOURNAL_STREAM": "8:1234"}])
def test_no_second_timestamp_under_journald(tmp_path: Path, env: dict[str, str]) -> None:
    import re

    from tests.conftest import run_cli

    r = run_cli("-v", "predict", str(write_fake_artifact(tmp_path / "a")), "--input", "-", stdin=b"[1, 2]", env=env)
    assert r.returncode == 0 and "INFO edge_runtime.model: loaded fake version 1" in r.stderr, r.stderr
    stamped = re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r.stderr, re.M)
    assert bool(stamped) == (not env), r.stderr

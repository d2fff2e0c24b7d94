"""`edge-runtime rollout` against a real Mosquitto and four agents (in this process, each with its
own data dir and MQTT sessions) under steady traffic: a good artifact promotes step by step and
completes; a bad one (its model starts failing once committed) is rolled back within a window
with the reason in `rollout status`, every device back on the baseline."""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.agent import Agent
from edge_runtime.cli import main
from edge_runtime.config import load_config
from tests.mqtt_broker import Broker, wait_for, write_agent_config
from tests.updates_kit import Operator, make_keys, signed_artifact, write_fleet_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
DEVICES = ("pi-a", "pi-b", "pi-c", "pi-d")


class Group:
    def __init__(self, tmp: Path, broker: Broker) -> None:
        self.tmp = tmp
        self.fleet = f"t{uuid.uuid4().hex[:8]}"
        self.keys = make_keys(tmp / "keys")
        self.v1 = signed_artifact(tmp / "v1", "1", self.keys)
        self.fleet_cfg = write_fleet_config(tmp / "fleet.toml", port=broker.port, fleet=self.fleet, keys=self.keys,
                                            data_dir=tmp / "fleet-data", chunk_size_kb=4)
        self.agents: dict[str, Agent] = {}
        for dev in DEVICES:
            cfg = write_agent_config(
                tmp / f"{dev}.toml", port=broker.port, artifact=self.v1, data_dir=tmp / dev, device=dev,
                fleet=self.fleet, groups=("eu",), metrics_interval_s=0.2, heartbeat_interval_s=0.5,
                updates={"artifact_keys": [self.keys.artifact_pub], "deployment_keys": [self.keys.deploy_pub],
                         "probation_s": 0.3, "probation_min_predictions": 0, "download_stall_s": 1.0})
            a = Agent(load_config(cfg))
            a.start()
            self.agents[dev] = a
        self._stop = threading.Event()
        self.errors = 0
        self._load = threading.Thread(target=self._traffic, daemon=True)
        self._load.start()
        op = Operator(self.fleet_cfg)
        try:
            op.server.wait_for(lambda: all(op.status(d).get("state") == "online" for d in DEVICES), 20)
        finally:
            op.close()

    def _traffic(self) -> None:
        i = 0
        while not self._stop.is_set():
            for a in self.agents.values():
                rt = a.runtime
                if rt is None:
                    continue
                try:
                    rt.predict([1.0, float(i % 10)])
                except Exception:
                    self.errors += 1
            i += 1
            time.sleep(0.002)

    def versions(self) -> dict[str, str]:
        return {d: str(a.runtime.model_version) for d, a in self.agents.items() if a.runtime is not None}

    def rollout(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["rollout", *args, "--config", str(self.fleet_cfg)])
        return code, out.getvalue()

    def close(self) -> None:
        self._stop.set()
        self._load.join(5)
        for a in self.agents.values():
            a.stop()


@pytest.fixture
def group(tmp_path: Path, mosquitto: Broker) -> Iterator[Group]:
    g = Group(tmp_path, mosquitto)
    yield g
    g.close()


PLAN = ["--group", "eu", "--baseline", "", "--steps", "25,100", "--window", "1s", "--min-samples", "100",
        "--max-error-rate", "0.05", "--tick", "0.2"]


def plan(g: Group) -> list[str]:
    return [str(g.v1) if x == "" else x for x in PLAN]


def test_a_good_artifact_promotes_step_by_step_and_completes(group: Group) -> None:
    v2 = signed_artifact(group.tmp / "v2", "2", group.keys, scale=2.0)
    code, out = group.rollout("start", str(v2), *plan(group))
    assert code == 0, out
    assert "step 25% promoted" in out and "completed" in out
    wait_for(lambda: set(group.versions().values()) == {"2"}, 20, "every device on version 2")
    code, text = group.rollout("status", "--group", "eu")
    assert code == 0 and "state: completed" in text
    assert "| 1 | 25% |" in text and "| promote |" in text and "| 2 | 100% | 4 | 0 | 0 | 0 | 4 |" in text, text
    assert "| complete | all 4 device(s) committed |" in text


def test_a_bad_artifact_is_rolled_back_within_a_window_with_its_reason(group: Group) -> None:
    bad = signed_artifact(group.tmp / "bad", "2", group.keys, scale=2.0, fail_after=40)  # fails once serving
    t0 = time.monotonic()
    code, out = group.rollout("start", str(bad), *plan(group))
    assert code == 1, out
    assert time.monotonic() - t0 < 60
    wait_for(lambda: set(group.versions().values()) == {"1"}, 30, "every device back on version 1")
    code, text = group.rollout("status", "--group", "eu")
    assert "state: rolled_back" in text, text
    assert "error rate" in text or "failed or rolled back" in text, text
    assert group.rollout("pause", "--group", "eu")[0] == 2  # a finished rollout cannot be paused


def _state(g: Group) -> dict[str, Any]:
    from edge_runtime.fleet.config import load_fleet_config
    from edge_runtime.fleet.rollout.state import RolloutStore

    store = RolloutStore(load_fleet_config(g.fleet_cfg).fleet.data_dir)
    try:
        return store.find(group="eu") or {}
    finally:
        store.close()


def test_a_pause_step_holds_until_resume(group: Group) -> None:
    v2 = signed_artifact(group.tmp / "v2", "2", group.keys, scale=2.0)
    args = [x if x != "25,100" else "25,pause,100" for x in plan(group)]
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(run=group.rollout("start", str(v2), *args)))
    t.start()
    wait_for(lambda: _state(group).get("state") == "paused", 40, "the pause step")
    time.sleep(1.0)
    assert _state(group)["state"] == "paused"
    held = group.versions()
    assert list(held.values()).count("2") < 4  # nobody past the first step while paused
    code, out = group.rollout("resume", "--group", "eu")
    assert code == 0 and "resume requested" in out
    t.join(60)
    assert result["run"][0] == 0, result
    assert set(group.versions().values()) == {"2"}


def test_a_killed_controller_resumes_from_its_saved_step(group: Group) -> None:
    import os
    import signal
    import subprocess
    import sys

    v2 = signed_artifact(group.tmp / "v2", "2", group.keys, scale=2.0)
    args = [x if x != "1s" else "3s" for x in plan(group)]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "rollout", "start", str(v2), *args, "--config",
                             str(group.fleet_cfg)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (_state(group).get("steps") or [{}])[0].get("decision") == "window", 40, "step 1's window")
        proc.send_signal(signal.SIGKILL)  # mid-window
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = _state(group)
    assert saved["state"] == "running" and saved["step"] == 0
    code, out = group.rollout("resume", "--group", "eu")
    assert code == 0, out
    assert "running the controller from step 1" in out and "completed" in out
    assert set(group.versions().values()) == {"2"}

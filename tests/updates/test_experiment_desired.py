"""An experiment set by a signed desired state, end to end over a real Mosquitto with the agent
in this process: the candidate travels as chunks, is verified and served beside the model; a
candidate that does not verify is refused with the running experiment kept; a document without
an experiment ends it; a restarted agent runs it again from the retained document."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from tests.mqtt_broker import Broker, Collector, wait_for
from tests.updates_kit import Operator, device_config, events, make_keys, signed_artifact, write_fleet_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


def variants(agent: Agent, n: int = 200) -> dict[str, set[tuple[str, float]]]:
    rt = agent.runtime
    assert rt is not None
    out: dict[str, set[tuple[str, float]]] = {}
    for i in range(n):
        p = rt.predict([1.0, 2.0], request_id=f"r{i}")
        out.setdefault(str(p.variant), set()).add((str(p.model_version), round(p.value, 3)))
    return out


def test_a_desired_state_runs_ends_and_restores_an_experiment(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = f"t{uuid.uuid4().hex[:8]}"
    keys = make_keys(tmp_path / "keys")
    v1 = signed_artifact(tmp_path / "v1", "1", keys)
    v2 = signed_artifact(tmp_path / "v2", "2", keys, scale=2.0)
    unsigned = signed_artifact(tmp_path / "v3", "3", None, scale=3.0)
    cfg = device_config(tmp_path / "device.toml", port=mosquitto.port, fleet=fleet, artifact=v1,
                        data_dir=tmp_path / "data", keys=keys)
    op = Operator(write_fleet_config(tmp_path / "fleet.toml", port=mosquitto.port, fleet=fleet, keys=keys,
                                     data_dir=tmp_path / "fleet-data", chunk_size_kb=4))
    col = Collector(mosquitto.port, [f"edge/{fleet}/devices/+/events"]).wait_subscribed()
    agents: list[Agent] = []

    def start() -> Agent:
        a = Agent(load_config(cfg))
        a.start()
        agents.append(a)
        wait_for(lambda: (op.status("pi-1").get("state") == "online"), 20, "pi-1 online")
        return a

    try:
        agent = start()
        exp: dict[str, Any] = {"dir": v2, "mode": "split", "weight": 0.5}
        uid = op.desired(v1, experiment=exp)
        assert op.wait_outcome("pi-1", uid) == "committed"  # version 1 is already active
        wait_for(lambda: events(col, "experiment_started"), 30, "experiment_started")
        got = variants(agent)
        assert got == {"primary": {("1", 3.0)}, "candidate": {("2", 6.0)}}, got
        # a candidate without an artifact signature: refused, the running experiment stays
        op.desired(v1, experiment={"dir": unsigned, "mode": "split", "weight": 0.5})
        wait_for(lambda: events(col, "experiment_failed"), 30, "experiment_failed")
        assert "is not signed" in events(col, "experiment_failed")[0]["reason"]
        assert set(variants(agent)) == {"primary", "candidate"}
        # shadow instead, then no experiment at all
        op.desired(v1, experiment={"dir": v2, "mode": "shadow", "shadow_sample": 1.0})
        wait_for(lambda: agent.runtime and agent.runtime.experiment and agent.runtime.experiment.mode == "shadow",
                 30, "the shadow experiment")
        assert set(variants(agent)) == {"primary"}
        assert agent.runtime.experiment.drain()
        assert agent.metrics_snapshot()["runtime"]["variants"]["agreement"]["compared"] >= 200
        op.desired(v1)
        wait_for(lambda: agent.runtime.experiment is None, 30, "the experiment to end")
        wait_for(lambda: events(col, "experiment_ended"), 10, "experiment_ended")
        # the retained document brings it back after a restart
        op.desired(v1, experiment=exp)
        wait_for(lambda: agent.runtime.experiment is not None, 30, "the experiment again")
        agent.stop()
        agent = start()
        wait_for(lambda: agent.runtime.experiment is not None, 30, "the experiment after a restart")
        assert set(variants(agent)) == {"primary", "candidate"}
    finally:
        for a in agents:
            a.stop()
        op.close()
        col.close()

"""Model updates end to end: a real Mosquitto, real agent processes (or an in-process Agent where
the test must drive predictions), the real update server and publish/rollback commands."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.agent import Agent
from edge_runtime.config import load_config
from edge_runtime.fleet.server import UpdateServer, desired_document
from tests.conftest import run_cli
from tests.mqtt_broker import Broker, start_agent_process, wait_for
from tests.updates_kit import Keys, Operator, device_config, make_keys, signed_artifact, write_fleet_config

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


class Fleet:
    """One test's fleet: keys, artifacts v1 (configured) and v2, a device config, an operator."""

    def __init__(self, tmp: Path, broker: Broker, **updates: Any) -> None:
        self.tmp, self.broker = tmp, broker
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.keys: Keys = make_keys(tmp / "keys")
        self.v1 = signed_artifact(tmp / "v1", "1", self.keys)
        self.v2 = signed_artifact(tmp / "v2", "2", self.keys, scale=2.0)
        self.data = tmp / "data"
        self.device_cfg = device_config(tmp / "device.toml", port=broker.port, fleet=self.name, artifact=self.v1,
                                        data_dir=self.data, keys=self.keys, groups=("eu",), **updates)
        self.fleet_cfg = write_fleet_config(tmp / "fleet.toml", port=broker.port, fleet=self.name, keys=self.keys,
                                            data_dir=tmp / "fleet-data", chunk_size_kb=4)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._op: Operator | None = None

    @property
    def op(self) -> Operator:
        if self._op is None:
            self._op = Operator(self.fleet_cfg)
        return self._op

    def start_agent(self, **env: str) -> subprocess.Popen[bytes]:
        import os

        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            p = start_agent_process(self.device_cfg, self.tmp / "agent.log")
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.procs.append(p)
        return p

    def wait_online(self, version: str, timeout: float = 20) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            s = self.op.status("pi-1")
            return s if s.get("state") == "online" and (s.get("active") or {}).get("version") == version else None

        return dict(wait_for(ok, timeout, f"pi-1 online on version {version}"))

    def artifact(self, version: str, **kw: Any) -> Path:
        return signed_artifact(self.tmp / f"v{version}-{uuid.uuid4().hex[:4]}", version, self.keys, **kw)

    def log(self) -> str:
        p = self.tmp / "agent.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        if self._op is not None:
            self._op.close()


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Broker) -> Iterator[Fleet]:
    f = Fleet(tmp_path, mosquitto)
    yield f
    f.close()


def _predict(cfg: Path, row: str = "[1.0, 2.0]") -> float:
    r = run_cli("predict", str(cfg), "--input", "-", stdin=row.encode())
    assert r.returncode == 0, r.stderr
    return float(json.loads(r.stdout.strip().splitlines()[0])["value"])


def test_a_signed_update_is_downloaded_verified_activated_and_committed(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    r = run_cli("publish", str(fleet.v2), "--config", str(fleet.fleet_cfg), "--device", "pi-1", "--wait",
                "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr + fleet.log()
    assert "pi-1: committed" in r.stdout
    steps = [line.split(": ")[1].split()[0] for line in r.stdout.splitlines() if " pi-1: update_" in line]
    assert steps == ["update_received", "update_downloaded", "update_verified", "update_activated",
                     "update_committed"], r.stdout
    status = fleet.wait_online("2")
    assert status["previous"] == {"name": "fake", "version": "1"} and status["update"] is None
    assert _predict(fleet.device_cfg) == pytest.approx(6.0)  # y = 2 * (1 + 2): the new model serves


def test_a_bad_update_is_refused_with_its_reason_and_the_old_model_keeps_serving(fleet: Fleet) -> None:
    """unsigned, wrongly signed, untrusted key, tampered model or manifest, truncated, replayed,
    expired, downgrade, a document signed by an untrusted deployment key: each refused, v1 stays."""
    fleet.start_agent()
    fleet.wait_online("1")
    op = fleet.op
    stranger = make_keys(fleet.tmp / "stranger")

    unsigned = fleet.artifact("3")
    (unsigned / "manifest.sig").unlink()
    wrong_role = signed_artifact(fleet.tmp / "wrong-role", "3", None)
    from edge_runtime.updates.trust import load_private_key, sign_artifact

    sign_artifact(wrong_role, load_private_key(fleet.keys.deploy_key))  # a deployment key signed it
    untrusted = signed_artifact(fleet.tmp / "untrusted", "3", stranger)
    tampered_model = fleet.artifact("3")
    data = bytearray((tampered_model / "model.json").read_bytes())
    data[data.index(b"1.0") + 2] = ord("5")  # one byte, same size: a weight of 1.5
    (tampered_model / "model.json").write_bytes(bytes(data))
    tampered_manifest = fleet.artifact("3")
    (tampered_manifest / "manifest.json").write_text(
        (tampered_manifest / "manifest.json").read_text().replace('"task": "regression"', '"task":  "regression"'))
    truncated = fleet.artifact("3")
    (truncated / "model.json").write_bytes((truncated / "model.json").read_bytes()[:-5])
    older = fleet.artifact("0.9")

    cases: list[tuple[str, dict[str, Any], str]] = [
        ("unsigned", {"artifact": unsigned}, "not signed"),
        ("wrong role", {"artifact": wrong_role}, "does not trust"),
        ("untrusted", {"artifact": untrusted}, "does not trust"),
        ("tampered model", {"artifact": tampered_model}, "sha256 mismatch"),
        ("tampered manifest", {"artifact": tampered_manifest}, "does not verify"),
        ("truncated", {"artifact": truncated}, "size mismatch"),
        ("expired", {"artifact": fleet.v2, "expires_in_s": -60}, "expired"),
        ("downgrade", {"artifact": older}, "older than the active"),
        ("untrusted deployment key", {"artifact": fleet.v2, "key": stranger.deploy_key}, "does not trust"),
    ]
    for what, kw, reason in cases:
        uid = op.desired(**kw)
        assert op.wait_outcome("pi-1", uid) == "refused", (what, op.final("pi-1", uid), fleet.log())
        assert reason in op.final("pi-1", uid)["reason"], (what, op.final("pi-1", uid))
        assert op.status("pi-1")["active"]["version"] == "1", what

    # a replay: a good document, then the same bytes again after a newer one was accepted
    base = 10**13  # above the now-in-ms sequences used so far
    first = op.desired(fleet.v2, sequence=base)
    assert op.wait_outcome("pi-1", first) == "committed"
    second = op.desired(fleet.v1, sequence=base + 1, force=True)  # forced downgrade is allowed
    assert op.wait_outcome("pi-1", second) == "committed"
    replayed = op.desired(fleet.v2, sequence=base)
    assert op.wait_outcome("pi-1", replayed) == "refused"
    assert "replayed or out of date" in op.final("pi-1", replayed)["reason"]
    assert op.status("pi-1")["active"]["version"] == "1"
    assert _predict(fleet.device_cfg) == pytest.approx(3.0)


def test_a_device_that_was_off_during_the_publish_converges_when_it_starts(fleet: Fleet) -> None:
    uid = fleet.op.desired(fleet.v2, {"group": "eu"})  # retained, nobody listening yet
    fleet.start_agent()
    assert fleet.op.wait_outcome("pi-1", uid) == "committed", fleet.log()
    fleet.wait_online("2")


class HalfServer(UpdateServer):
    """Serves only the first half of each artifact's chunks: a transfer stopped mid-way."""

    def allow(self, artifact_id: str, index: int) -> bool:
        served = self.artifacts.get(artifact_id)
        return served is not None and index < served.meta["chunks"] // 2


def _have(data: Path) -> int:
    files = list((data / "updates" / "staging").glob("*/have"))
    return sum(files[0].read_bytes()) if files else 0


def test_a_download_resumes_after_a_broker_restart_and_an_agent_kill(fleet: Fleet, mosquitto: Broker) -> None:
    big = fleet.artifact("2", pad="x" * 400_000)  # 100 chunks of 4 KB
    chunks = -(-(big / "model.json").stat().st_size // 4096)
    half = Operator(fleet.fleet_cfg, server_cls=HalfServer)
    fleet.start_agent()
    fleet.wait_online("1")
    uid = half.desired(big)
    wait_for(lambda: _have(fleet.data) >= chunks // 2 - 16, 30, "half the chunks on disk")

    mosquitto.kill()  # the broker dies mid-download and comes back (its persistence keeps the retained state)
    mosquitto.start()
    half.close()
    proc = fleet.procs[-1]
    proc.send_signal(signal.SIGKILL)  # and the agent is killed -9
    proc.wait(10)
    had = _have(fleet.data)
    assert had >= chunks // 2 - 16

    full = Operator(fleet.fleet_cfg)
    full.server.serve(big)
    fleet.start_agent()
    assert full.wait_outcome("pi-1", uid, 60) == "committed", fleet.log()
    # it fetched what it lacked, not the whole file again
    assert full.server.chunks_sent <= chunks - had + 16, (full.server.chunks_sent, chunks, had)
    full.close()


@pytest.mark.parametrize("step", ["downloading", "verifying", "staging", "activating", "activated"])
def test_kill_9_at_each_activation_step_restarts_on_a_valid_version(fleet: Fleet, step: str) -> None:
    proc = fleet.start_agent(EDGE_RUNTIME_CRASH_AT=step)
    fleet.wait_online("1")
    uid = fleet.op.desired(fleet.v2)
    assert proc.wait(30) == -signal.SIGKILL, fleet.log()
    # whatever the step, the store names a complete version and the device serves it
    v = _predict(fleet.device_cfg)
    assert v in (pytest.approx(3.0), pytest.approx(6.0))
    fleet.start_agent()
    assert fleet.op.wait_outcome("pi-1", uid, 40) == "committed", fleet.log()
    assert _predict(fleet.device_cfg) == pytest.approx(6.0)


def test_a_model_that_fails_its_smoke_test_is_never_activated(fleet: Fleet) -> None:
    bad = fleet.artifact("2", smoke=False)
    m = json.loads((bad / "manifest.json").read_text())
    m["smoke"] = {"rows": [[1.0, 2.0]], "values": [99.0]}
    (bad / "manifest.json").write_text(json.dumps(m))
    from edge_runtime.updates.trust import load_private_key, sign_artifact

    sign_artifact(bad, load_private_key(fleet.keys.artifact_key))
    fleet.start_agent()
    fleet.wait_online("1")
    uid = fleet.op.desired(bad)
    assert fleet.op.wait_outcome("pi-1", uid) == "failed"
    assert "smoke test" in fleet.op.final("pi-1", uid)["reason"]
    events = [e for e in fleet.op.server.devices["pi-1"].final.values()]
    assert events and fleet.op.status("pi-1")["active"]["version"] == "1"
    assert _predict(fleet.device_cfg) == pytest.approx(3.0)


def test_a_crash_loop_in_probation_rolls_back(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto, probation_s=600, probation_max_restarts=1)
    try:
        fleet.start_agent()
        fleet.wait_online("1")
        uid = fleet.op.desired(fleet.v2)
        fleet.wait_online("2")
        state = fleet.data / "updates" / "state.json"
        for n in (1, 2):  # two unclean restarts while version 2 is in probation
            proc = fleet.procs[-1]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            fleet.start_agent()
            wait_for(lambda n=n: (json.loads(state.read_text()).get("probation") or {}).get("restarts", n) >= n,
                     20, f"start {n} counted")
        assert fleet.op.wait_outcome("pi-1", uid, 30) == "rolled_back", fleet.log()
        assert "restarted 2 times in probation" in fleet.op.final("pi-1", uid)["reason"]
        status = fleet.wait_online("1")
        assert status["previous"] is None  # 2 failed: never "previous"
    finally:
        fleet.close()


def test_the_rollback_command_returns_to_the_previous_committed_version(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    assert fleet.op.wait_outcome("pi-1", fleet.op.desired(fleet.v2)) == "committed"
    r = run_cli("rollback", "--config", str(fleet.fleet_cfg), "--device", "pi-1", "--timeout", "30")
    assert r.returncode == 0, r.stdout + r.stderr + fleet.log()
    assert "rollback_done" in r.stdout
    fleet.wait_online("1")
    assert _predict(fleet.device_cfg) == pytest.approx(3.0)
    # a rollback with nothing to go back to says so
    r = run_cli("rollback", "--config", str(fleet.fleet_cfg), "--device", "pi-1", "--timeout", "30")
    assert r.returncode == 1 and "no previous committed version" in r.stdout


# -- in-process: the test drives predictions --------------------------------------------------------
def _agent(fleet: Fleet) -> Agent:
    agent = Agent(load_config(fleet.device_cfg))
    agent.start()
    return agent


def test_probation_rolls_back_a_version_whose_p99_breaches_the_limit(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto, probation_s=60, probation_min_predictions=30, max_p99_ms=15.0)
    agent = _agent(fleet)
    try:
        fleet.wait_online("1")
        slow = fleet.artifact("2", scale=2.0, delay_s=0.03)
        uid = fleet.op.desired(slow)
        wait_for(lambda: (agent.models.active and agent.models.active.version == "2"), 20, "version 2 active")
        for _ in range(40):
            assert agent.runtime is not None
            agent.runtime.predict([1.0, 2.0])
        assert fleet.op.wait_outcome("pi-1", uid) == "rolled_back"
        reason = fleet.op.final("pi-1", uid)["reason"]
        assert "probation breach: p99" in reason and "over max_p99_ms 15.0" in reason
        assert agent.runtime.predict([1.0, 2.0]).value == pytest.approx(3.0)
        assert agent.models.store is not None and agent.models.store.previous() is None
    finally:
        agent.stop()
        fleet.close()


def test_probation_rolls_back_a_version_that_fails_in_service(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto, probation_s=60, probation_min_predictions=20)
    agent = _agent(fleet)
    try:
        fleet.wait_online("1")
        uid = fleet.op.desired(fleet.artifact("2", scale=2.0, fail_after=5))  # passes its smoke test, then fails
        wait_for(lambda: (agent.models.active and agent.models.active.version == "2"), 20, "version 2 active")
        errors = 0
        for _ in range(30):
            try:
                agent.runtime.predict([1.0, 2.0])  # type: ignore[union-attr]
            except Exception:
                errors += 1
        assert errors > 0
        assert fleet.op.wait_outcome("pi-1", uid) == "rolled_back"
        assert "error rate" in fleet.op.final("pi-1", uid)["reason"]
    finally:
        agent.stop()
        fleet.close()


def test_predict_under_four_threads_sees_no_error_through_twenty_updates(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto, probation_s=0)
    agent = _agent(fleet)
    stop = threading.Event()
    answers: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        rt = agent.runtime
        assert rt is not None
        while not stop.is_set():
            try:
                p = rt.predict([1.0, 2.0])
                answers.append((p.source, p.model_version))
            except BaseException as exc:  # every failure is the finding
                errors.append(exc)
            time.sleep(0.0002)  # steady traffic (thousands of calls/s) that leaves the agent's threads the GIL

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        fleet.wait_online("1")
        for t in threads:
            t.start()
        for n in range(2, 22):
            uid = fleet.op.desired(fleet.artifact(str(n), scale=float(n)))
            assert fleet.op.wait_outcome("pi-1", uid) == "committed", fleet.op.final("pi-1", uid).get("reason")
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors, errors[:3]
        sources = {s for s, _ in answers}
        assert sources == {"model"}, sources  # no swap-caused fallback
        assert {"1", "21"} <= {v for _, v in answers} and len(answers) > 1000
    finally:
        stop.set()
        agent.stop()
        fleet.close()


def test_the_active_version_corrupt_at_start_rolls_back_to_the_previous_one(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    assert fleet.op.wait_outcome("pi-1", fleet.op.desired(fleet.v2)) == "committed"
    proc = fleet.procs[-1]
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    model = fleet.data / "models" / "fake" / "2" / "model.json"
    model.write_bytes(model.read_bytes()[:-3])  # a bad sector
    fleet.start_agent()
    status = fleet.wait_online("1")
    assert status["active"]["version"] == "1"
    assert _predict(fleet.device_cfg) == pytest.approx(3.0)
    back = wait_for(lambda: [e for e in fleet.op.server.devices["pi-1"].final.values()
                             if e.get("type") == "update_rolled_back"], 10, "rollback event")
    assert "could not be loaded at start" in back[0]["reason"] and back[0]["version"] == "2"


def test_key_rotation_without_touching_the_device(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    new = make_keys(fleet.tmp / "new-keys", prefix="new-")
    args = ["publish-keys", "--config", str(fleet.fleet_cfg), "--version", "1", "--artifact-key", str(new.artifact_pub),
            "--deployment-key", str(new.deploy_pub), "--timeout", "20"]
    # signed by the new keys only: refused (a stranger could do that)
    r = run_cli(*args, "--sign-with", str(new.deploy_key))
    assert r.returncode == 1 and "keys_refused" in r.stdout, r.stdout + r.stderr
    r = run_cli(*args, "--sign-with", str(fleet.keys.deploy_key), "--sign-with", str(new.deploy_key))
    assert r.returncode == 0 and "keys_rotated" in r.stdout, r.stdout + r.stderr + fleet.log()

    v2 = signed_artifact(fleet.tmp / "v2-new", "2", new, scale=2.0)
    old_signed = fleet.op.desired(v2)  # the old deployment key is no longer trusted
    assert fleet.op.wait_outcome("pi-1", old_signed) == "refused"
    assert "does not trust" in fleet.op.final("pi-1", old_signed)["reason"]
    # the rotation survives a restart: the new keys work after it
    proc = fleet.procs[-1]
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    fleet.start_agent()
    uid = fleet.op.desired(v2, key=new.deploy_key)
    assert fleet.op.wait_outcome("pi-1", uid) == "committed", fleet.op.final("pi-1", uid).get("reason")
    # an artifact signed by the old artifact key is refused now, even with a new deployment signature
    v3_old = fleet.artifact("3")
    uid = fleet.op.desired(v3_old, key=new.deploy_key)
    assert fleet.op.wait_outcome("pi-1", uid) == "refused"


def test_a_newer_desired_state_supersedes_a_download_and_a_refused_one_does_not(fleet: Fleet) -> None:
    big = fleet.artifact("2", pad="x" * 200_000)
    half = Operator(fleet.fleet_cfg, server_cls=HalfServer)
    try:
        fleet.start_agent()
        fleet.wait_online("1")
        uid2 = half.desired(big)
        wait_for(lambda: _have(fleet.data) >= 5, 30, "some chunks on disk")
        status = wait_for(lambda: (fleet.op.status("pi-1").get("update") or {}).get("state") == "downloading"
                          and fleet.op.status("pi-1"), 20, "downloading in the status")
        assert status["update"]["id"] == uid2 and 0 <= status["update"]["percent"] <= 60

        bad = fleet.op.desired(fleet.v2, expires_in_s=-1)  # refused: the download goes on where it was
        assert fleet.op.wait_outcome("pi-1", bad) == "refused"
        had = _have(fleet.data)
        time.sleep(1.5)
        assert fleet.op.outcome("pi-1", uid2) is None and _have(fleet.data) >= had

        uid3 = fleet.op.desired(fleet.artifact("3", scale=3.0))  # a valid newer one replaces it
        assert fleet.op.wait_outcome("pi-1", uid3) == "committed", fleet.log()
        assert fleet.op.wait_outcome("pi-1", uid2) == "failed"
        assert f"superseded by update {uid3}" in fleet.op.final("pi-1", uid2)["reason"]
        assert _predict(fleet.device_cfg) == pytest.approx(9.0)
    finally:
        half.close()


def test_an_update_that_does_not_fit_on_disk_fails_before_downloading(fleet: Fleet) -> None:
    import shutil

    free = shutil.disk_usage(fleet.tmp).free
    fleet.start_agent()
    fleet.wait_online("1")
    huge = fleet.artifact("2")
    # a desired state that claims a model file larger than the disk (the device checks first)
    art = desired_document("x", {"all": True}, huge, sequence=1, expires_in_s=60, force=False)["artifact"]
    uid = fleet.op.desired(huge, doc_changes={"artifact": {**art, "size_bytes": free * 2}})
    assert fleet.op.wait_outcome("pi-1", uid) == "failed"
    reason = fleet.op.final("pi-1", uid)["reason"]
    assert "not enough disk space" in reason and "bytes free" in reason
    assert not list((fleet.data / "updates" / "staging").glob("*/model.json.part"))


def test_an_artifact_the_device_already_holds_is_not_downloaded_again(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    assert fleet.op.wait_outcome("pi-1", fleet.op.desired(fleet.v2)) == "committed"
    sent = fleet.op.server.chunks_sent
    r = run_cli("rollback", "--config", str(fleet.fleet_cfg), "--device", "pi-1")
    assert r.returncode == 0, r.stdout
    uid = fleet.op.desired(fleet.v2)  # version 2 again: installed already
    assert fleet.op.wait_outcome("pi-1", uid) == "committed"
    assert fleet.op.server.chunks_sent == sent


def test_a_desired_state_may_name_a_url_instead_of_mqtt_chunks(fleet: Fleet) -> None:
    fleet.start_agent()
    fleet.wait_online("1")
    art = desired_document("x", {"all": True}, fleet.v2, sequence=1, expires_in_s=60, force=False)["artifact"]
    uid = fleet.op.desired(fleet.v2, serve=False, doc_changes={"artifact": {**art, "url": fleet.v2.as_uri()}})
    assert fleet.op.wait_outcome("pi-1", uid) == "committed", fleet.op.final("pi-1", uid)
    assert fleet.op.server.chunks_sent == 0
    assert _predict(fleet.device_cfg) == pytest.approx(6.0)


def test_update_server_serves_a_device_that_comes_later(fleet: Fleet) -> None:
    """publish with nobody online returns; update-server, started later, serves the late device."""
    r = run_cli("publish", str(fleet.v2), "--config", str(fleet.fleet_cfg), "--group", "eu", "--timeout", "5")
    assert r.returncode == 0 and "waiting for 0 device(s)" in r.stdout, r.stdout + r.stderr
    import os
    import sys

    from tests.conftest import ROOT

    server = subprocess.Popen([sys.executable, "-m", "edge_runtime", "update-server", "--config", str(fleet.fleet_cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        fleet.start_agent()
        fleet.wait_online("2", timeout=40)
    finally:
        server.send_signal(signal.SIGTERM)
        out = server.communicate(timeout=15)[0].decode()
    assert "serving 1 artifact(s)" in out and server.returncode == 0, out


def test_too_few_predictions_stay_in_probation_and_say_inconclusive(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto, probation_s=0.5, probation_min_predictions=50)
    agent = _agent(fleet)
    try:
        fleet.wait_online("1")
        uid = fleet.op.desired(fleet.v2)
        status = wait_for(lambda: "inconclusive" in str((fleet.op.status("pi-1").get("update") or {}).get("detail"))
                          and fleet.op.status("pi-1"), 20, "an inconclusive probation in the status")
        assert status["update"]["state"] == "probation" and status["active"]["version"] == "2"
        assert "fewer than the 50 needed" in status["update"]["detail"]
        assert fleet.op.outcome("pi-1", uid) is None  # never committed on too little evidence
        for _ in range(60):
            agent.runtime.predict([1.0, 2.0])  # type: ignore[union-attr]
        assert fleet.op.wait_outcome("pi-1", uid) == "committed"
    finally:
        agent.stop()
        fleet.close()


def test_a_damaged_store_copy_is_rebuilt_from_the_configured_artifact(tmp_path: Path, mosquitto: Broker) -> None:
    fleet = Fleet(tmp_path, mosquitto)
    Agent(load_config(fleet.device_cfg)).models.start().close()  # installs v1 into the store
    model = fleet.data / "models" / "fake" / "1" / "model.json"
    model.write_bytes(model.read_bytes()[:-4])  # the store's copy goes bad; the configured one is fine
    agent = _agent(fleet)
    try:
        assert agent.runtime is not None and agent.runtime.predict([1.0, 2.0]).source == "model"
        wait_for(lambda: fleet.op.status("pi-1").get("state") == "online", 20, "online")
        assert str(fleet.v1) in agent.models.start_problems[0]["repair"]
    finally:
        agent.stop()
        fleet.close()


def test_with_nothing_loadable_the_agent_stays_up_reports_and_takes_an_update(tmp_path: Path,
                                                                             mosquitto: Broker) -> None:
    """No good copy anywhere (store and configured artifact damaged, nothing committed before):
    the agent starts without a model, reports model_error, and a signed update brings it back."""
    fleet = Fleet(tmp_path, mosquitto)
    Agent(load_config(fleet.device_cfg)).models.start().close()
    for m in (fleet.data / "models" / "fake" / "1" / "model.json", fleet.v1 / "model.json"):
        m.write_bytes(b"{" + m.read_bytes()[1:-4])
    agent = _agent(fleet)
    try:
        assert agent.runtime is not None and agent.runtime.health()["ready"] is False
        with pytest.raises(Exception, match="no fallback is configured"):
            agent.runtime.predict([1.0, 2.0])
        uid = fleet.op.desired(fleet.v2)
        assert fleet.op.wait_outcome("pi-1", uid) == "committed", fleet.op.final("pi-1", uid)
        assert agent.runtime.predict([1.0, 2.0]).value == pytest.approx(6.0)
    finally:
        agent.stop()
        fleet.close()

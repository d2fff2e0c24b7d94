"""What the update tests share: keys, signed fake artifacts of several versions, a fleet config
for the operator's side, and a device config whose [updates] trusts those keys."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.updates.trust import generate, load_private_key, sign_artifact
from tests.conftest import write_fake_artifact
from tests.mqtt_broker import toml_value, write_agent_config


@dataclass
class Keys:
    artifact_key: Path
    artifact_pub: Path
    deploy_key: Path
    deploy_pub: Path


def make_keys(d: Path, prefix: str = "") -> Keys:
    ak, ap = generate(d, f"{prefix}artifact")
    dk, dp = generate(d, f"{prefix}deploy")
    return Keys(ak, ap, dk, dp)


def signed_artifact(d: Path, version: str, keys: Keys | None, *, scale: float = 1.0, smoke: bool = True,
                    **spec: Any) -> Path:
    """A fake-backend artifact y = scale * (a + b), signed with the artifact key. ``spec`` goes
    into the model file (``delay_s``, ``fail_after``: a model that is bad from the start)."""
    manifest: dict[str, Any] = {"source": {"uri": f"test:{uuid.uuid4().hex}"}}  # every artifact distinct
    if smoke:
        manifest["smoke"] = {"rows": [[1.0, 2.0]], "values": [3.0 * scale], "atol": 1e-3}
    write_fake_artifact(d, version=version, weights=[[scale], [scale]], **manifest)
    if spec:
        from edge_runtime.manifest import read_manifest, sha256_file, write_manifest

        model = json.loads((d / "model.json").read_text())
        (d / "model.json").write_text(json.dumps({**model, **spec}))
        m = read_manifest(d)
        import dataclasses

        write_manifest(d, dataclasses.replace(m, sha256=sha256_file(d / "model.json"),
                                              size_bytes=(d / "model.json").stat().st_size))
    if keys is not None:
        sign_artifact(d, load_private_key(keys.artifact_key))
    return d


def write_fleet_config(path: Path, *, port: int, fleet: str, keys: Keys, data_dir: Path,
                       chunk_size_kb: int = 128) -> Path:
    path.write_text("\n".join([
        "[fleet]", f"name = {toml_value(fleet)}", f"data_dir = {toml_value(data_dir)}",
        "[mqtt]", 'host = "127.0.0.1"', f"port = {port}", "reconnect_min_s = 0.05", "reconnect_max_s = 0.3",
        "[updates]", f"deployment_key = {toml_value(keys.deploy_key)}",
        f"artifact_keys = {toml_value([keys.artifact_pub])}", f"chunk_size_kb = {chunk_size_kb}"]) + "\n")
    return path


def device_config(path: Path, *, port: int, fleet: str, artifact: Path, data_dir: Path, keys: Keys,
                  device: str = "pi-1", groups: tuple[str, ...] = (), **updates: Any) -> Path:
    u = {"artifact_keys": [keys.artifact_pub], "deployment_keys": [keys.deploy_pub], "probation_s": 0.3,
         "probation_min_predictions": 0, "download_stall_s": 1.0, **updates}
    return write_agent_config(path, port=port, artifact=artifact, data_dir=data_dir, device=device, fleet=fleet,
                              groups=groups, updates=u, heartbeat_interval_s=0.5)


def events(collector: Any, *types: str) -> list[dict[str, Any]]:
    return [e for e in collector.json("events") if not types or e.get("type") in types]


class Operator:
    """The operator's side in-process: an UpdateServer that serves artifacts and publishes
    signed desired states exactly as ``edge-runtime publish`` does, minus its local checks (so
    tests can send what a device must refuse)."""

    def __init__(self, fleet_config: Path, server_cls: Any = None) -> None:
        from edge_runtime.fleet.config import load_fleet_config
        from edge_runtime.fleet.server import UpdateServer

        self.cfg = load_fleet_config(fleet_config)
        self.server = (server_cls or UpdateServer)(self.cfg)
        self.server.start()

    def desired(self, artifact: Path, target: dict[str, Any] | None = None, *, key: Path | None = None,
                sequence: int | None = None, expires_in_s: float = 3600, force: bool = False,
                serve: bool = True, retain: bool = True, doc_changes: dict[str, Any] | None = None,
                experiment: dict[str, Any] | None = None) -> str:
        from edge_runtime.fleet import server as fs
        from edge_runtime.updates.desired import update_id
        from edge_runtime.updates.trust import load_private_key, sign_document

        target = target or {"device": "pi-1"}
        if serve:
            self.server.serve(artifact)
            if experiment is not None:
                self.server.serve(experiment["dir"])
        doc = fs.desired_document(self.cfg.fleet.name, target, artifact, sequence=sequence,
                                  expires_in_s=expires_in_s, force=force, experiment=experiment)
        doc.update(doc_changes or {})
        signed = sign_document(doc, [load_private_key(key or self.cfg.updates.deployment_key)])
        self.server.publish(fs.desired_topic(self.cfg.fleet.name, target), json.dumps(signed).encode(),
                            retain=retain)
        return update_id(doc)

    def command(self, device: str, cmd: dict[str, Any]) -> None:
        from edge_runtime.fleet import server as fs

        self.server.publish(fs.cmd_topic(self.cfg.fleet.name, {"device": device}), json.dumps(cmd).encode())

    def outcome(self, device: str, uid: str) -> str | None:
        view = self.server.devices.get(device)
        return view.outcome.get(uid) if view else None

    def wait_outcome(self, device: str, uid: str, timeout: float = 30.0) -> str:
        ok = self.server.wait_for(lambda: self.outcome(device, uid) is not None, timeout)
        assert ok, f"no outcome for update {uid} from {device} in {timeout} s"
        return str(self.outcome(device, uid))

    def final(self, device: str, uid: str) -> dict[str, Any]:
        view = self.server.devices.get(device)
        return dict(view.final.get(uid) or {}) if view else {}

    def status(self, device: str) -> dict[str, Any]:
        view = self.server.devices.get(device)
        return dict(view.status) if view else {}

    def close(self) -> None:
        self.server.stop()

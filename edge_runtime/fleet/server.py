"""The operator's side of updates: sign and publish desired states, serve artifact chunks, and
watch devices converge (``publish``, ``rollback``, ``update-server``).

Published artifacts are kept under the fleet's ``data_dir/artifacts/<manifest sha256>/`` so
``update-server`` can serve them to devices that come back later. Chunks are read from disk
on request, so the server's memory does not grow with artifact size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.fleet.config import FleetConfig
from edge_runtime.manifest import MANIFEST_FILE, SIGNATURE_FILE, read_manifest, verify_artifact
from edge_runtime.sync.mqtt import MqttLink, json_bytes
from edge_runtime.sync.topics import ROOT, fleet_topics
from edge_runtime.updates.desired import update_id
from edge_runtime.updates.transfer import encode_chunk, expand, make_meta, topic
from edge_runtime.updates.trust import KeyRing, load_private_key, sign_document

log = logging.getLogger(__name__)

FINAL_EVENTS = {"update_committed": "committed", "update_failed": "failed", "update_refused": "refused",
                "update_rolled_back": "rolled_back"}
MAX_REQUEST_CHUNKS = 1024  # per request message; a device asks for its window


@dataclass
class Served:
    dir: Path
    meta: dict[str, Any]
    file: Path


@dataclass
class DeviceView:
    """What the server has heard from one device."""

    status: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)  # update id -> committed / failed / ...
    final: dict[str, dict[str, Any]] = field(default_factory=dict)  # update id -> the event that ended it
    last_event: dict[str, Any] | None = None


class UpdateServer:
    """Serves chunks of registered artifacts and tracks devices' status and update events."""

    def __init__(self, cfg: FleetConfig, *, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.fleet = cfg.fleet.name
        self.artifacts: dict[str, Served] = {}
        self.devices: dict[str, DeviceView] = {}
        self.on_event = on_event
        self.chunks_sent = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._queued: set[tuple[str, int]] = set()
        self._changed = threading.Condition()
        self.link = MqttLink(cfg.mqtt, client_id=cfg.mqtt.client_id or f"edge-fleet-{os.getpid()}",
                             on_connect=self._on_connect, on_message=self._on_message)
        self._sender = threading.Thread(target=self._send_loop, name="chunk-sender", daemon=True)

    # -- artifacts ----------------------------------------------------------------------------------
    def register(self, artifact_dir: Path) -> str:
        """Keep a copy under the fleet's data dir (for update-server) and serve it."""
        manifest = (artifact_dir / MANIFEST_FILE).read_bytes()
        aid = hashlib.sha256(manifest).hexdigest()
        dest = Path(self.cfg.fleet.data_dir) / "artifacts" / aid
        if not (dest / MANIFEST_FILE).is_file():
            tmp = dest.with_name(f".{aid}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            m = read_manifest(artifact_dir)
            for name in (MANIFEST_FILE, SIGNATURE_FILE, m.file):
                if (artifact_dir / name).is_file():
                    shutil.copyfile(artifact_dir / name, tmp / name)
            os.replace(tmp, dest)
        self.serve(dest)
        return aid

    def serve(self, artifact_dir: Path) -> str:
        meta = make_meta(artifact_dir, self.cfg.chunk_size)
        with self._lock:
            self.artifacts[meta["id"]] = Served(artifact_dir, meta, artifact_dir / meta["file"])
        return str(meta["id"])

    def serve_registry(self) -> int:
        root = Path(self.cfg.fleet.data_dir) / "artifacts"
        n = 0
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_FILE).is_file():
                self.serve(d)
                n += 1
        return n

    # -- connection ----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self._sender.start()
        self.link.start()
        if not self.link.wait_connected(timeout):
            self.stop()
            raise ConfigError(f"cannot connect to the broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port} "
                              f"within {timeout:.0f} s ({self.link.state.last_error or 'no answer'})",
                              file=self.cfg.file, key="mqtt.host")
        self.link.subscribed.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)
        self.link.stop()

    def publish(self, topic_name: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0) -> None:
        info = self.link.publish(topic_name, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise ConfigError(f"the broker did not acknowledge the publish to {topic_name} in {timeout:.0f} s",
                              file=self.cfg.file, key="mqtt.host")

    def _on_connect(self) -> None:
        base = f"{ROOT}/{self.fleet}"
        self.link.client.subscribe([(f"{base}/artifacts/+/request", 1), (f"{base}/devices/+/status", 1),
                                    (f"{base}/devices/+/events", 1)])

    # -- messages (paho's network thread) -----------------------------------------------------------
    def _on_message(self, topic_name: str, payload: bytes, ack: Callable[[], None]) -> None:
        ack()
        parts = topic_name.split("/")
        if len(parts) != 5:
            return
        try:
            body = json.loads(payload) if payload else {}
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if parts[2] == "artifacts" and parts[4] == "request":
            self._on_request(parts[3], body)
        elif parts[2] == "devices" and parts[4] in ("status", "events"):
            self._on_device(parts[3], parts[4], body)

    def _on_request(self, aid: str, body: dict[str, Any]) -> None:
        with self._lock:
            served = self.artifacts.get(aid)
        if served is None:
            return
        if body.get("meta"):
            self.link.publish(topic(self.fleet, aid, "meta"), json_bytes(served.meta), qos=1)
        for i in expand(body.get("chunks"), served.meta["chunks"], MAX_REQUEST_CHUNKS):
            if not self.allow(aid, i):
                continue
            key = (aid, i)
            with self._lock:
                if key in self._queued:
                    continue
                self._queued.add(key)
            self._queue.put(key)

    def _on_device(self, device: str, kind: str, body: dict[str, Any]) -> None:
        with self._changed:
            view = self.devices.setdefault(device, DeviceView())
            if kind == "status":
                view.status = body
            else:
                outcome = FINAL_EVENTS.get(str(body.get("type")))
                uid = body.get("update_id")
                if isinstance(uid, str) and body.get("type", "").startswith("update_"):
                    view.last_event = body
                    if outcome:
                        view.outcome[uid] = outcome
                        view.final[uid] = body
            self._changed.notify_all()
        if kind == "events" and self.on_event is not None and str(body.get("type", "")).startswith(
                ("update_", "rollback", "keys_")):
            self.on_event(device, body)

    def allow(self, artifact_id: str, index: int) -> bool:
        """May this chunk be sent now? Always, here; a subclass can throttle or stage a
        transfer (the tests stop one half-way to prove that devices resume)."""
        return True

    # -- sending -----------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        fds: dict[str, int] = {}
        try:
            while (item := self._queue.get()) is not None:
                aid, i = item
                with self._lock:
                    self._queued.discard(item)
                    served = self.artifacts.get(aid)
                if served is None:
                    continue
                path = str(served.file)
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                size = served.meta["chunk_size"]
                data = os.pread(fds[path], size, i * size)
                info = self.link.publish(topic(self.fleet, aid, "chunks"), encode_chunk(i, served.meta["chunks"], data),
                                         qos=1)
                self.chunks_sent += 1
                self.bytes_sent += len(data)
                if self.chunks_sent % 8 == 0:  # keep paho's buffer (and our memory) small
                    try:
                        info.wait_for_publish(10)
                    except (RuntimeError, ValueError):
                        pass
        finally:
            for fd in fds.values():
                os.close(fd)

    # -- watching devices ---------------------------------------------------------------------------
    def wait_for(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(pred, timeout)

    def known_devices(self, *, group: str | None = None) -> list[str]:
        """Devices whose retained status says they are online (and in ``group``)."""
        with self._changed:
            return sorted(d for d, v in self.devices.items()
                          if v.status.get("state") == "online"
                          and (group is None or group in (v.status.get("groups") or [])))


# -- documents ------------------------------------------------------------------------------------
def target_of(device: str | None, group: str | None, all_: bool) -> dict[str, Any]:
    if sum(x is not None and x is not False for x in (device, group, all_ or None)) != 1:
        raise ConfigError("give exactly one of --device ID, --group G or --all")
    return {"device": device} if device else ({"group": group} if group else {"all": True})


def desired_document(fleet: str, target: dict[str, Any], artifact_dir: Path, *, sequence: int | None,
                     expires_in_s: float, force: bool, url: str | None = None,
                     experiment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The desired-state document; ``experiment``: {"dir": candidate artifact, "mode", "weight",
    "key", "shadow_sample"} serves a candidate beside the artifact (A/B or shadow)."""
    doc: dict[str, Any] = {"type": "desired", "fleet": fleet, "target": target, "sequence": sequence or now_ms(),
           "expires": expires_at(expires_in_s), "force": force, "artifact": artifact_entry(artifact_dir, url)}
    if experiment is not None:
        options = {k: experiment[k] for k in ("mode", "weight", "key", "shadow_sample") if k in experiment}
        doc["experiment"] = {"artifact": artifact_entry(Path(experiment["dir"]), experiment.get("url")), **options}
    return doc


def artifact_entry(artifact_dir: Path, url: str | None = None) -> dict[str, Any]:
    m = read_manifest(artifact_dir)
    manifest_sha = hashlib.sha256((artifact_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    return {"name": m.name, "version": m.version, "sha256": m.sha256, "size_bytes": m.size_bytes,
            "manifest_sha256": manifest_sha, "url": url}


def rollback_command(fleet: str, target: dict[str, Any], key_path: Path, *, sequence: int | None = None,
                     expires_in_s: float = 3600.0) -> dict[str, Any]:
    doc = {"type": "rollback", "fleet": fleet, "target": target, "sequence": sequence or now_ms(),
           "expires": expires_at(expires_in_s), "force": True}
    signed = sign_document(doc, [load_private_key(key_path)])
    return {"cmd": "rollback", "id": str(uuid.uuid4()), **signed}


def keyset_document(fleet: str, version: int, artifact_pubs: list[Path], deployment_pubs: list[Path],
                    signing_keys: list[Path]) -> dict[str, Any]:
    """A signed key-set document (key rotation): sign it with a key the devices trust now and
    with a key of the new set."""
    from edge_runtime.updates.trust import encode_public, load_public_key

    doc = {"type": "keyset", "fleet": fleet, "version": version,
           "artifact_keys": [encode_public(load_public_key(p)) for p in artifact_pubs],
           "deployment_keys": [encode_public(load_public_key(p)) for p in deployment_pubs]}
    return sign_document(doc, [load_private_key(k) for k in signing_keys])


def keys_topic(fleet: str) -> str:
    return f"{ROOT}/{fleet}/keys"


def check_artifact(artifact_dir: Path, artifact_keys: tuple[Path, ...]) -> str:
    """What publish checks before devices are pointed at an artifact: the model file against
    the manifest, and the signature (against the fleet's artifact keys when configured)."""
    verify_artifact(artifact_dir)
    if artifact_keys:
        kid = KeyRing.from_paths(artifact=artifact_keys).verify_artifact(artifact_dir)
        return f"signed by artifact key {kid[:16]}"
    if not (artifact_dir / SIGNATURE_FILE).is_file():
        raise ConfigError(f"{artifact_dir} is not signed; devices refuse unsigned artifacts. Sign it with "
                          "edge-runtime sign DIR --key ARTIFACT_KEY (or pass --no-verify to test that they do)")
    return "signed (not checked here: set [updates] artifact_keys in the fleet config to check it)"


def signed_desired(doc: dict[str, Any], key_path: Path) -> dict[str, Any]:
    return sign_document(doc, [load_private_key(key_path)])


def desired_topic(fleet: str, target: dict[str, Any]) -> str:
    return fleet_topics(fleet, group=target.get("group"), device=target.get("device"))[0]


def cmd_topic(fleet: str, target: dict[str, Any]) -> str:
    return fleet_topics(fleet, group=target.get("group"), device=target.get("device"))[1]


def now_ms() -> int:
    return int(time.time() * 1000)


def expires_at(seconds: float) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` or plain seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration such as 7d, 12h, 30m or 45s") from None


__all__ = ["UpdateServer", "check_artifact", "cmd_topic", "desired_document", "desired_topic", "parse_duration",
           "rollback_command", "signed_desired", "target_of", "update_id"]

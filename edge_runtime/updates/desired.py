"""Desired-state documents and the signed commands that change what a device runs.

    {"doc": {"type": "desired", "fleet": "acme", "target": {"device": "pi-01"} | {"group": "eu"} | {"all": true},
             "sequence": 1733100000123, "expires": "2026-12-09T00:00:00Z", "force": false,
             "artifact": {"name": "churn", "version": "7", "sha256": "...", "size_bytes": 123,
                          "manifest_sha256": "...", "url": null}},
     "signatures": [{"keyid": "...", "sig": "..."}]}

``type`` is ``desired`` (retained on a ``desired`` topic, or sent as an ``update`` command) or
``rollback`` (a command: go back to the previous committed version). ``check`` refuses, with
the reason, a document that is not signed by a trusted deployment key, not addressed to this
device, expired, or whose sequence is not above the last one accepted for its target.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.updates.trust import DEPLOYMENT, KeyRing, canonical

TYPES = ("desired", "rollback")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class Refused(EdgeRuntimeError):
    """A signed document this device will not act on; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ArtifactRef:
    name: str
    version: str
    sha256: str
    size_bytes: int
    manifest_sha256: str
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "size_bytes": self.size_bytes, "manifest_sha256": self.manifest_sha256, "url": self.url}


@dataclass(frozen=True)
class ExperimentRef:
    """A desired state's ``experiment``: a candidate artifact and how it is compared."""

    artifact: ArtifactRef
    mode: str
    weight: float
    key: str
    shadow_sample: float

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode, "weight": self.weight, "key": self.key, "shadow_sample": self.shadow_sample}

    @property
    def ident(self) -> str:
        """What identifies this experiment: the candidate's bytes and the options."""
        return canonical({"manifest_sha256": self.artifact.manifest_sha256, **self.options()}).decode()


@dataclass(frozen=True)
class Document:
    """A checked document: what it asks, for which target, under which sequence."""

    type: str
    fleet: str
    target: tuple[str, str]  # ("device", id) | ("group", name) | ("all", "")
    sequence: int
    expires: dt.datetime
    force: bool
    artifact: ArtifactRef | None
    signed: dict[str, Any]  # as received, to persist and resume from
    keyid: str
    experiment: ExperimentRef | None = None  # a candidate beside the artifact (A/B or shadow)

    @property
    def target_key(self) -> str:
        kind, value = self.target
        return f"{kind}:{value}" if value else kind

    @property
    def update_id(self) -> str:
        """Short, stable id of this document (publisher and device compute the same)."""
        return update_id(self.signed["doc"])

    @property
    def specificity(self) -> int:
        return {"device": 2, "group": 1, "all": 0}[self.target[0]]


def update_id(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()[:16]


def target_key(target: dict[str, Any]) -> str:
    kind, value = _target(target)
    return f"{kind}:{value}" if value else kind


def check(signed: Any, ring: KeyRing, *, device: str, fleet: str, groups: tuple[str, ...],
          sequences: dict[str, int], now: dt.datetime | None = None) -> Document:
    """The document, if this device should act on it; else TrustError or Refused saying why."""
    doc, kid = ring.verify_document(signed, DEPLOYMENT)
    kind = doc.get("type")
    if kind not in TYPES:
        raise Refused(f"unknown document type {str(kind)[:40]!r}; expected one of {', '.join(TYPES)}")
    if doc.get("fleet") != fleet:
        raise Refused(f"for fleet {str(doc.get('fleet'))[:64]!r}, this device is in {fleet!r}")
    target = _target(doc.get("target"))
    if target[0] == "device" and target[1] != device:
        raise Refused(f"addressed to device {target[1][:64]!r}, not this one ({device!r})")
    if target[0] == "group" and target[1] not in groups:
        raise Refused(f"addressed to group {target[1][:64]!r}; this device is in {list(groups)}")
    seq = doc.get("sequence")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Refused("sequence must be a non-negative integer")
    expires = _time(doc.get("expires"))
    now = now or dt.datetime.now(dt.UTC)
    if expires <= now:
        raise Refused(f"expired at {expires.isoformat()} (device clock {now.isoformat(timespec='seconds')}); "
                      "publish it again")
    key = f"{target[0]}:{target[1]}" if target[1] else target[0]
    last = sequences.get(key)
    if last is not None and seq <= last:
        raise Refused(f"replayed or out of date: sequence {seq} is not above {last}, the last accepted for {key}")
    force = doc.get("force", False)
    if not isinstance(force, bool):
        raise Refused("force must be true or false")
    art = _artifact(doc.get("artifact")) if kind == "desired" else None
    exp = _experiment(doc.get("experiment")) if kind == "desired" and doc.get("experiment") is not None else None
    return Document(type=kind, fleet=fleet, target=target, sequence=seq, expires=expires, force=force,
                    artifact=art, signed=signed, keyid=kid, experiment=exp)


def _target(t: Any) -> tuple[str, str]:
    if isinstance(t, dict) and len(t) == 1:
        (kind, value), = t.items()
        if kind == "all" and value is True:
            return ("all", "")
        if kind in ("device", "group") and isinstance(value, str) and value and len(value) <= 128:
            return (kind, value)
    raise Refused('target must be {"device": ID}, {"group": NAME} or {"all": true}')


def _time(v: Any) -> dt.datetime:
    if not isinstance(v, str):
        raise Refused("expires must be an ISO 8601 time such as 2026-12-09T00:00:00Z")
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f"expires {v[:40]!r} is not an ISO 8601 time") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _artifact(a: Any) -> ArtifactRef:
    if not isinstance(a, dict):
        raise Refused("a desired state needs an artifact {name, version, sha256, size_bytes, manifest_sha256}")
    name, version, url = a.get("name"), a.get("version"), a.get("url")
    for field, v in (("name", name), ("version", version)):
        if not isinstance(v, str) or not _NAME.match(v):
            raise Refused(f"artifact {field} must be 1-128 letters, digits, '.', '_', '+' or '-'")
    for field in ("sha256", "manifest_sha256"):
        if not isinstance(a.get(field), str) or not _HEX64.match(a[field]):
            raise Refused(f"artifact {field} must be 64 lowercase hex digits")
    size = a.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise Refused("artifact size_bytes must be a positive integer")
    if url is not None and not (isinstance(url, str) and url.startswith(("file://", "https://", "http://"))):
        raise Refused("artifact url must be null or a file://, https:// or http:// URL")
    return ArtifactRef(str(name), str(version), a["sha256"], size, a["manifest_sha256"], url)


def _experiment(e: Any) -> ExperimentRef:
    from edge_runtime.errors import ConfigError
    from edge_runtime.experiment import ExperimentOptions

    if not isinstance(e, dict) or set(e) - {"artifact", "mode", "weight", "key", "shadow_sample"}:
        raise Refused("experiment must be {artifact, mode, weight, key, shadow_sample}")
    try:
        opts = ExperimentOptions(mode=e.get("mode", "split"), weight=e.get("weight", 0.1),
                                 key=e.get("key", "request_id"), shadow_sample=e.get("shadow_sample", 0.2))
    except ConfigError as exc:
        raise Refused(f"experiment: {exc.reason}") from None
    if len(opts.key) > 128:
        raise Refused("experiment key must be at most 128 characters")
    return ExperimentRef(_artifact(e.get("artifact")), opts.mode, float(opts.weight), opts.key,
                         float(opts.shadow_sample))


# -- version order ------------------------------------------------------------------------------------
def is_older(candidate: tuple[str, str | None], active: tuple[str, str | None]) -> bool:
    """Is ``candidate`` (version, created_at) older than ``active``? PEP 440 order when both
    versions parse, else the manifests' ``created_at``."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(candidate[0]) < Version(active[0])
    except InvalidVersion:
        pass
    a, b = candidate[1], active[1]
    if not a or not b:
        return False
    try:
        return _time(a) < _time(b)
    except Refused:
        return a < b


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)

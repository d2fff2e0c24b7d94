"""Ed25519 keys and signatures: what a device trusts, and how documents and artifacts are signed.

Two roles, as Uptane separates its image and director repositories:

- **artifact** keys sign ``manifest.json`` (the workstation that converts; kept offline). The
  manifest's sha256 covers the model file, so the signature covers both.
- **deployment** keys sign desired-state documents and commands that change what runs.

A device needs both: a stolen deployment key can only point devices at artifacts that an
artifact key signed. A key's id is the sha256 of its raw 32-byte public key, in hex.

A signed document is ``{"doc": {...}, "signatures": [{"keyid": ..., "sig": base64}]}``, signed
over ``canonical(doc)``; ``manifest.sig`` is ``{"signatures": [...]}`` over the bytes of
``manifest.json`` as they are on disk.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import ConfigError, TrustError
from edge_runtime.manifest import SIGNATURE_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@functools.cache
def _crypto() -> Any:
    """``cryptography``, imported on first use: ~7.5 MB of RSS a device without keys never pays."""
    from types import SimpleNamespace

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    return SimpleNamespace(InvalidSignature=InvalidSignature, serialization=serialization,
                           Ed25519PrivateKey=Ed25519PrivateKey, Ed25519PublicKey=Ed25519PublicKey)


ARTIFACT, DEPLOYMENT = "artifact", "deployment"
MAX_SIGNATURES = 16  # more than this in one document is refused unread


def canonical(doc: Any) -> bytes:
    """The bytes a document is signed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(_crypto().serialization.Encoding.Raw, _crypto().serialization.PublicFormat.Raw)


def keyid(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()


# -- key files ------------------------------------------------------------------------------------
def generate(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub`` (PEM); refuse to overwrite."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p} exists; keygen never overwrites a key (choose another --name or move it)")
    key = _crypto().Ed25519PrivateKey.generate()
    pem = key.private_bytes(_crypto().serialization.Encoding.PEM, _crypto().serialization.PrivateFormat.PKCS8,
                            _crypto().serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(_crypto().serialization.Encoding.PEM,
                                                       _crypto().serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = _crypto().serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the private key {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key (make one with "
                          f"edge-runtime keygen): {exc}") from exc
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key (make one with edge-runtime keygen)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the public key {path}: {exc.strerror or exc}") from exc
    return public_key_from(data, str(path))


def public_key_from(data: bytes | str, where: str = "key") -> Ed25519PublicKey:
    """A public key from PEM, or base64 of the raw 32 bytes (as key-set documents carry them)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = _crypto().serialization.load_pem_public_key(raw)
        else:
            key = _crypto().Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"{where} is not an Ed25519 public key (PEM or base64 of 32 bytes): {exc}") from exc
    if not isinstance(key, _crypto().Ed25519PublicKey):
        raise ConfigError(f"{where} is not an Ed25519 public key")
    return key


# -- signing --------------------------------------------------------------------------------------
def signature(key: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    return {"keyid": keyid(key.public_key()), "sig": base64.b64encode(key.sign(data)).decode()}


def sign_document(doc: dict[str, Any], keys: Iterable[Ed25519PrivateKey]) -> dict[str, Any]:
    data = canonical(doc)
    return {"doc": doc, "signatures": [signature(k, data) for k in keys]}


def sign_artifact(artifact_dir: str | Path, key: Ed25519PrivateKey) -> Path:
    """Add (or replace) this key's signature in ``manifest.sig``; other keys' signatures stay,
    so an artifact can carry the old and the new key's signature during a rotation."""
    d = Path(artifact_dir)
    manifest = (d / "manifest.json").read_bytes()
    sig_path = d / SIGNATURE_FILE
    sigs = [s for s in read_signatures(sig_path) if s.get("keyid") != keyid(key.public_key())]
    sigs.append(signature(key, manifest))
    sig_path.write_text(json.dumps({"signatures": sigs}, indent=1) + "\n")
    return sig_path


def read_signatures(sig_path: Path) -> list[dict[str, Any]]:
    """The signatures in a ``manifest.sig``; [] when there is none; TrustError when unreadable."""
    try:
        doc = json.loads(sig_path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise TrustError(f"{sig_path} is unreadable ({exc}); sign the artifact again") from exc
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    if not isinstance(sigs, list):
        raise TrustError(f"{sig_path} has no 'signatures' list; sign the artifact again")
    return sigs


# -- verifying ------------------------------------------------------------------------------------
@dataclass
class KeyRing:
    """The keys a device trusts, by role (key id -> key)."""

    artifact: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    deployment: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    version: int = 0  # of the key-set document these came from; 0 = the config's keys

    @classmethod
    def from_paths(cls, *, both: Iterable[Path] = (), artifact: Iterable[Path] = (),
                   deployment: Iterable[Path] = ()) -> KeyRing:
        ring = cls()
        for p in both:
            k = load_public_key(p)
            ring.artifact[keyid(k)] = ring.deployment[keyid(k)] = k
        for p in artifact:
            k = load_public_key(p)
            ring.artifact[keyid(k)] = k
        for p in deployment:
            k = load_public_key(p)
            ring.deployment[keyid(k)] = k
        return ring

    @property
    def enabled(self) -> bool:
        """Are signatures required? Yes as soon as any key is configured."""
        return bool(self.artifact or self.deployment)

    def keys(self, role: str) -> dict[str, Ed25519PublicKey]:
        return self.artifact if role == ARTIFACT else self.deployment

    def verify(self, data: bytes, signatures: Any, role: str) -> str:
        """The id of a trusted key of ``role`` whose signature over ``data`` verifies; else
        TrustError saying why (unsigned, untrusted key, bad signature)."""
        trusted = self.keys(role)
        if not trusted:
            raise TrustError(f"no {role} keys are configured on this device; set [updates] "
                             f"{role}_keys or public_keys")
        if not isinstance(signatures, list) or not signatures:
            raise TrustError("unsigned: no signatures")
        if len(signatures) > MAX_SIGNATURES:
            raise TrustError(f"{len(signatures)} signatures (at most {MAX_SIGNATURES})")
        seen = []
        for s in signatures:
            kid = s.get("keyid") if isinstance(s, dict) else None
            if not isinstance(kid, str):
                continue
            seen.append(kid[:16])
            key = trusted.get(kid)
            if key is None:
                continue
            try:
                key.verify(base64.b64decode(str(s.get("sig", "")), validate=True), data)
            except (_crypto().InvalidSignature, binascii.Error, ValueError):
                raise TrustError(f"signature by {role} key {kid[:16]} does not verify "
                                 "(the document or artifact was changed after signing)") from None
            return kid
        return _untrusted(role, seen)

    def verify_document(self, signed: Any, role: str = DEPLOYMENT) -> tuple[dict[str, Any], str]:
        """(doc, key id) of a signed document, or TrustError."""
        if not isinstance(signed, dict) or not isinstance(signed.get("doc"), dict):
            raise TrustError("not a signed document: expected {\"doc\": {...}, \"signatures\": [...]}")
        kid = self.verify(canonical(signed["doc"]), signed.get("signatures"), role)
        return signed["doc"], kid

    def verify_artifact(self, artifact_dir: str | Path) -> str:
        """The trusted artifact key whose signature over ``manifest.json`` verifies."""
        d = Path(artifact_dir)
        sigs = read_signatures(d / SIGNATURE_FILE)
        if not sigs:
            raise TrustError(f"{d} is not signed (no {SIGNATURE_FILE}); sign it with "
                             "edge-runtime sign DIR --key ARTIFACT_KEY")
        return self.verify((d / "manifest.json").read_bytes(), sigs, ARTIFACT)


    # -- rotation ---------------------------------------------------------------------------------
    def rotate(self, signed: Any, fleet: str) -> KeyRing:
        """The key ring a signed key-set document describes, if this ring must accept it (TUF's
        root rotation, simplified): ``{"doc": {"type": "keyset", "fleet", "version": N,
        "artifact_keys": [base64 raw key, ...], "deployment_keys": [...]}, "signatures": [...]}``.
        Its version must be above this ring's, and it must be signed by a key trusted now (either
        role) *and* by a key of the new set, so neither a stolen old key nor a stranger alone
        can replace the keys. TrustError says why not."""
        if not isinstance(signed, dict) or not isinstance(signed.get("doc"), dict):
            raise TrustError("not a signed key-set document")
        doc = signed["doc"]
        if doc.get("type") != "keyset" or doc.get("fleet") != fleet:
            raise TrustError(f"not a key set for fleet {fleet!r}")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version <= self.version:
            raise TrustError(f"key-set version {str(version)[:20]} is not above the current {self.version}")
        new = KeyRing(version=version)
        for role in (ARTIFACT, DEPLOYMENT):
            keys = doc.get(f"{role}_keys")
            if not isinstance(keys, list) or not keys or len(keys) > MAX_SIGNATURES:
                raise TrustError(f"a key set needs 1-{MAX_SIGNATURES} {role}_keys")
            for k in keys:
                pk = public_key_from(str(k), f"{role} key in the key set")
                new.keys(role)[keyid(pk)] = pk
        data = canonical(doc)
        current = KeyRing(artifact={**self.artifact, **self.deployment})
        current.verify(data, signed.get("signatures"), ARTIFACT)
        incoming = KeyRing(artifact={**new.artifact, **new.deployment})
        try:
            incoming.verify(data, signed.get("signatures"), ARTIFACT)
        except TrustError as exc:
            raise TrustError(f"the key set is not signed by any of its own keys ({exc.reason})") from None
        return new

    @classmethod
    def from_keyset(cls, signed: dict[str, Any]) -> KeyRing:
        """The ring of a key set this device accepted before (read back from its own state)."""
        doc = signed["doc"]
        ring = cls(version=int(doc["version"]))
        for role in (ARTIFACT, DEPLOYMENT):
            for k in doc[f"{role}_keys"]:
                pk = public_key_from(str(k))
                ring.keys(role)[keyid(pk)] = pk
        return ring

    def replace_with(self, other: KeyRing) -> None:
        """Trust ``other``'s keys from now on (in place: every holder of this ring sees it)."""
        self.artifact.clear()
        self.artifact.update(other.artifact)
        self.deployment.clear()
        self.deployment.update(other.deployment)
        self.version = other.version


def encode_public(key: Ed25519PublicKey) -> str:
    """How a key-set document carries a key: base64 of the raw 32 bytes."""
    return base64.b64encode(raw_public(key)).decode()


def _untrusted(role: str, seen: list[str]) -> str:
    raise TrustError(f"signed only by keys this device does not trust for {role}s "
                     f"({', '.join(seen) or 'none readable'})")

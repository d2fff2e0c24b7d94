"""Artifacts over MQTT in chunks, resumable across broker restarts, kill -9 and power loss.

Topics (documented in docs/updates.md), ``ID`` being the artifact's ``manifest_sha256``:

    edge/{fleet}/artifacts/{ID}/request   device -> server  {"device", "meta": bool, "chunks": [[a, b], ...]}
    edge/{fleet}/artifacts/{ID}/meta      server -> device  {"id", "manifest", "signature", "file",
                                                             "size_bytes", "sha256", "chunk_size", "chunks"}
    edge/{fleet}/artifacts/{ID}/chunks    server -> device  one chunk: a JSON header line, then the bytes

A chunk's header is ``{"i": index, "n": chunks, "sha256": "<of the bytes>"}``; a chunk whose
bytes do not match is dropped and asked for again. Devices subscribe to ``chunks`` at QoS 0,
so a broker never queues megabytes for a device that went away; what is lost is re-requested.

On the device a download lives in ``data_dir/updates/staging/{ID}/``: ``manifest.json`` and
``manifest.sig`` from the meta, the model file being filled in place (``<file>.part``, written
at each chunk's offset, so memory does not grow with the artifact), and ``have`` — one byte per
chunk, 1 once that chunk's bytes are on disk. ``have`` is rewritten (temp + fsync + rename)
only after the part file was fsynced, so after a power cut every chunk it marks is really
there; chunks received since the last checkpoint are simply fetched again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.manifest import MANIFEST_FILE, SIGNATURE_FILE, sha256_file
from edge_runtime.store import fsync_dir, write_atomic

ROOT = "edge"
DEFAULT_CHUNK = 128 * 1024  # AWS IoT's MQTT file blocks are at most 128 KB; EMQX refuses > 1 MB
MAX_CHUNK = 512 * 1024
MAX_META_BYTES = 1 << 20
CHECKPOINT_BYTES = 4 << 20  # fsync + persist ``have`` at least this often
CHECKPOINT_S = 1.0


def topic(fleet: str, artifact_id: str, kind: str) -> str:
    return f"{ROOT}/{fleet}/artifacts/{artifact_id}/{kind}"


def artifact_id_of(topic_name: str) -> str | None:
    parts = topic_name.split("/")
    return parts[3] if len(parts) == 5 and parts[2] == "artifacts" else None


class TransferError(Exception):
    """A meta or chunk message that cannot be used (the sender or the wire is at fault)."""


# -- the wire format -------------------------------------------------------------------------------
def encode_chunk(index: int, total: int, data: bytes) -> bytes:
    head = json.dumps({"i": index, "n": total, "sha256": hashlib.sha256(data).hexdigest()},
                      separators=(",", ":")).encode()
    return head + b"\n" + data


def decode_chunk(payload: bytes) -> tuple[int, int, bytes]:
    """(index, total, bytes) of a chunk whose bytes match their hash; TransferError otherwise."""
    nl = payload.find(b"\n", 0, 256)
    if nl < 0:
        raise TransferError("no chunk header")
    try:
        head = json.loads(payload[:nl])
        i, n, digest = int(head["i"]), int(head["n"]), str(head["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TransferError(f"bad chunk header: {exc}") from None
    data = payload[nl + 1:]
    if hashlib.sha256(data).hexdigest() != digest:
        raise TransferError(f"chunk {i} does not match its hash (corrupted on the way)")
    return i, n, data


def make_meta(artifact_dir: Path, chunk_size: int) -> dict[str, Any]:
    """The meta message for an artifact directory (server side)."""
    manifest = (artifact_dir / MANIFEST_FILE).read_bytes()
    m = json.loads(manifest)
    sig = artifact_dir / SIGNATURE_FILE
    size = int(m["size_bytes"])
    return {"id": hashlib.sha256(manifest).hexdigest(), "manifest": base64.b64encode(manifest).decode(),
            "signature": base64.b64encode(sig.read_bytes()).decode() if sig.is_file() else None,
            "file": m["file"], "size_bytes": size, "sha256": m["sha256"], "chunk_size": chunk_size,
            "chunks": max(1, -(-size // chunk_size))}


def ranges(indices: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 6], [9, 10]] (half-open), to keep requests small."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def expand(rs: Any, total: int, limit: int) -> list[int]:
    """Indices of request ranges, bounded (a request is from the network)."""
    out: list[int] = []
    if not isinstance(rs, list):
        return out
    for r in rs[:limit]:
        if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
            a, b = max(0, r[0]), min(total, r[1])
            out.extend(range(a, min(b, a + limit - len(out))))
        if len(out) >= limit:
            break
    return out


# -- the device's staging area ---------------------------------------------------------------------
@dataclass
class Meta:
    id: str
    manifest: bytes
    signature: bytes | None
    file: str
    size_bytes: int
    sha256: str
    chunk_size: int
    chunks: int

    @classmethod
    def parse(cls, payload: bytes, expected_id: str) -> Meta:
        if len(payload) > MAX_META_BYTES:
            raise TransferError("meta message too large")
        try:
            d = json.loads(payload)
            manifest = base64.b64decode(d["manifest"], validate=True)
            sig = base64.b64decode(d["signature"], validate=True) if d.get("signature") else None
            meta = cls(str(d["id"]), manifest, sig, str(d["file"]), int(d["size_bytes"]), str(d["sha256"]),
                       int(d["chunk_size"]), int(d["chunks"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TransferError(f"bad meta message: {exc}") from None
        if hashlib.sha256(manifest).hexdigest() != expected_id or meta.id != expected_id:
            raise TransferError("meta's manifest does not hash to the artifact id asked for")
        if not (1 <= meta.chunk_size <= MAX_CHUNK) or meta.chunks != max(1, -(-meta.size_bytes // meta.chunk_size)):
            raise TransferError(f"meta has an impossible chunk layout ({meta.chunks} x {meta.chunk_size} bytes)")
        if "/" in meta.file or meta.file.startswith(".") or not meta.file:
            raise TransferError(f"meta names an unsafe file {meta.file[:64]!r}")
        return meta


class Staging:
    """One artifact being downloaded into ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, meta: Meta) -> None:
        self.dir = directory
        self.meta = meta
        self.part = directory / f"{meta.file}.part"
        self.have_path = directory / "have"
        directory.mkdir(parents=True, exist_ok=True)
        fresh = not (directory / MANIFEST_FILE).is_file() or (directory / MANIFEST_FILE).read_bytes() != meta.manifest
        if fresh:
            for p in directory.iterdir():
                p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)
            write_atomic(directory / MANIFEST_FILE, meta.manifest)
            if meta.signature is not None:
                write_atomic(directory / SIGNATURE_FILE, meta.signature)
        self.have = bytearray(meta.chunks)
        try:
            saved = self.have_path.read_bytes()
            if len(saved) == meta.chunks and self.part.is_file():
                self.have = bytearray(saved)
        except OSError:
            pass
        self._fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size != meta.size_bytes:
            os.ftruncate(self._fd, meta.size_bytes)  # sparse: no disk written yet
        self._unsaved = 0
        self._saved_at = time.monotonic()

    @property
    def received(self) -> int:
        return sum(self.have)

    @property
    def complete(self) -> bool:
        return self.received == self.meta.chunks

    @property
    def percent(self) -> float:
        return round(100.0 * self.received / self.meta.chunks, 1)

    def missing(self, limit: int, skip: set[int] | frozenset[int] = frozenset()) -> list[int]:
        out = []
        for i, h in enumerate(self.have):
            if not h and i not in skip:
                out.append(i)
                if len(out) >= limit:
                    break
        return out

    def write(self, index: int, data: bytes) -> bool:
        """Store one verified chunk; False when it does not belong (wrong size or index)."""
        m = self.meta
        if not 0 <= index < m.chunks or self.have[index]:
            return False
        want = min(m.chunk_size, m.size_bytes - index * m.chunk_size)
        if len(data) != want:
            return False
        os.pwrite(self._fd, data, index * m.chunk_size)
        self.have[index] = 1
        self._unsaved += len(data)
        self.maybe_checkpoint()
        return True

    def maybe_checkpoint(self) -> None:
        """Checkpoint when enough bytes or time went by since the last one (also called while
        idle, so chunks that arrived before a stall are not fetched again after a crash)."""
        if self._unsaved and (self._unsaved >= CHECKPOINT_BYTES or time.monotonic() - self._saved_at >= CHECKPOINT_S):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make every chunk marked in ``have`` durable, then persist ``have``."""
        os.fsync(self._fd)
        write_atomic(self.have_path, bytes(self.have))
        self._unsaved = 0
        self._saved_at = time.monotonic()

    def finish(self) -> Path:
        """The complete artifact directory (model file in place); ValueError if the whole file
        does not hash to the manifest's sha256 (the staging restarts from nothing)."""
        self.checkpoint()
        self.close()
        digest = sha256_file(self.part)
        if digest != self.meta.sha256:
            self.have = bytearray(self.meta.chunks)
            write_atomic(self.have_path, bytes(self.have))
            raise ValueError(f"downloaded file's sha256 {digest[:16]}... is not the manifest's "
                             f"{self.meta.sha256[:16]}...")
        os.replace(self.part, self.dir / self.meta.file)
        self.have_path.unlink(missing_ok=True)
        fsync_dir(self.dir)
        return self.dir

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

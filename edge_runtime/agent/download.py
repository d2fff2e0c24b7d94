"""Fetch one artifact into the staging area: over MQTT chunks (resumable), or from a URL.

The MQTT side asks the update server for the artifact's meta, then for windows of missing
chunks, and writes each verified chunk in place (``updates.transfer.Staging``). It re-asks
when nothing arrived for ``stall_s`` and after every reconnect, so a broker restart or a
server that starts later only delays it. Chunks the device already has on disk (from before
a restart) are never asked for again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edge_runtime.manifest import MANIFEST_FILE, SIGNATURE_FILE
from edge_runtime.store import fsync_dir, write_atomic
from edge_runtime.sync.mqtt import MqttLink, json_bytes
from edge_runtime.updates.desired import ArtifactRef, Refused
from edge_runtime.updates.transfer import Meta, Staging, TransferError, decode_chunk, ranges, topic

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


class Cancelled(Exception):
    """The download was abandoned (a newer desired state arrived, or the agent is stopping)."""


class DownloadFailed(Exception):
    pass


class MqttDownload:
    def __init__(self, link: MqttLink, *, fleet: str, device: str, artifact: ArtifactRef, directory: Path,
                 window: int, stall_s: float) -> None:
        self.link = link
        self.fleet, self.device, self.artifact = fleet, device, artifact
        self.aid = artifact.manifest_sha256
        self.dir = directory
        self.window = window
        self.stall_s = stall_s
        self.meta: Meta | None = None
        self.staging: Staging | None = None
        self.outstanding: set[int] = set()
        self.bad_chunks = 0
        self.wrong_sizes: dict[int, int] = {}
        self.error: Refused | None = None
        self._cv = threading.Condition()
        self._last_rx = time.monotonic()

    # -- paho's network thread --------------------------------------------------------------------
    def on_message(self, kind: str, payload: bytes) -> None:
        with self._cv:
            try:
                if kind == "meta" and self.meta is None:
                    self.meta = Meta.parse(payload, self.aid)
                elif kind == "chunks" and self.staging is not None:
                    i, _, data = decode_chunk(payload)
                    self.outstanding.discard(i)
                    if not self.staging.write(i, data):
                        self._wrong_size(i, len(data))
                        return
                else:
                    return
            except (TransferError, OSError) as exc:
                self.bad_chunks += 1
                log.warning("artifact %s: %s", self.aid[:12], exc)
                return
            self._last_rx = time.monotonic()
            self._cv.notify_all()

    # -- the updater's thread -----------------------------------------------------------------------
    def run(self, progress: Progress, cancelled: Callable[[], bool]) -> Path:
        done = self._already_done()
        if done is not None:
            return done
        sub_connects = -1
        t = {k: topic(self.fleet, self.aid, k) for k in ("request", "meta", "chunks")}
        try:
            while True:
                if cancelled():
                    raise Cancelled()
                if self.error is not None:
                    raise self.error
                if not self.link.connected:
                    self.link.wait_connected(1.0)
                    continue
                if self.link.state.connects != sub_connects:  # first time, or the broker came back
                    sub_connects = self.link.state.connects
                    self.link.client.subscribe([(t["meta"], 1), (t["chunks"], 0)])
                    with self._cv:
                        self.outstanding.clear()
                with self._cv:
                    meta, staging = self.meta, self.staging
                if meta is None:
                    self._request(t["request"], meta=True)
                    self._wait(lambda: self.meta is not None)
                    continue
                if staging is None:
                    self._check_meta(meta)
                    with self._cv:
                        self.staging = staging = Staging(self.dir, meta)
                    progress(staging.percent)
                with self._cv:
                    if staging.complete:
                        break
                    stalled = time.monotonic() - self._last_rx > self.stall_s
                    if stalled:
                        self.outstanding.clear()
                    want = []
                    if len(self.outstanding) <= self.window // 2:
                        want = staging.missing(self.window - len(self.outstanding), self.outstanding)
                        self.outstanding.update(want)
                if want:
                    self._request(t["request"], chunks=want)
                    if stalled:
                        self._last_rx = time.monotonic()
                before = staging.received
                self._wait(self._window_drained, 0.5)
                with self._cv:
                    staging.maybe_checkpoint()
                if staging.received != before:
                    progress(staging.percent)
            return self._finish(staging)
        finally:
            try:
                self.link.client.unsubscribe([t["meta"], t["chunks"]])
            except Exception:  # a dead link: the next connect does not resubscribe anyway
                pass
            if self.staging is not None:
                with self._cv:
                    self.staging.close()

    def _wrong_size(self, index: int, size: int) -> None:
        """A chunk of the wrong length, sent again and again: the served file is not the one the
        signed manifest describes (truncated or padded); give up instead of asking forever."""
        st = self.staging
        if st is None or not 0 <= index < st.meta.chunks or st.have[index]:
            return
        self.wrong_sizes[index] = self.wrong_sizes.get(index, 0) + 1
        if self.wrong_sizes[index] >= 3 and self.error is None:
            want = min(st.meta.chunk_size, st.meta.size_bytes - index * st.meta.chunk_size)
            self.error = Refused(f"size mismatch: the server sends chunk {index} with {size} bytes, the manifest "
                                 f"makes it {want} (the served file is not the signed one)")
            self._cv.notify_all()

    def _window_drained(self) -> bool:
        s = self.staging
        return self.error is not None or (s is not None and (s.complete or len(self.outstanding) <= self.window // 2))

    def _already_done(self) -> Path | None:
        """A download finished before a restart (the file is in place, the install was not done)."""
        try:
            m = json.loads((self.dir / MANIFEST_FILE).read_bytes())
            f = self.dir / str(m["file"])
        except (OSError, ValueError, KeyError):
            return None
        return self.dir if f.is_file() and not (self.dir / "have").exists() and \
            f.stat().st_size == self.artifact.size_bytes else None

    def _check_meta(self, meta: Meta) -> None:
        a = self.artifact
        if meta.sha256 != a.sha256 or meta.size_bytes != a.size_bytes:
            raise DownloadFailed("the server's manifest does not describe the artifact the desired state names "
                                 f"(sha256 {meta.sha256[:12]} vs {a.sha256[:12]}, "
                                 f"{meta.size_bytes} vs {a.size_bytes} bytes)")

    def _finish(self, staging: Staging) -> Path:
        """Every chunk matched its own hash on arrival, so a whole file that does not match the
        signed manifest was served that way: refused (tampered or wrong), not retried."""
        with self._cv:
            try:
                return staging.finish()
            except ValueError as exc:
                raise Refused(f"sha256 mismatch: {exc}") from exc

    def _request(self, request_topic: str, *, meta: bool = False, chunks: list[int] | None = None) -> None:
        body = {"device": self.device, "meta": meta, "chunks": ranges(chunks or [])}
        self.link.publish(request_topic, json_bytes(body), qos=1)

    def _wait(self, pred: Callable[[], bool], timeout: float | None = None) -> None:
        with self._cv:
            self._cv.wait_for(pred, timeout if timeout is not None else self.stall_s)


def fetch_url(artifact: ArtifactRef, directory: Path, progress: Progress, cancelled: Callable[[], bool],
              timeout_s: float = 30.0) -> Path:
    """Fetch ``manifest.json``, ``manifest.sig`` and the model file from ``artifact.url`` (a
    directory: file://, https:// or http://), resuming the model file with a Range request."""
    assert artifact.url is not None
    base = artifact.url if artifact.url.endswith("/") else artifact.url + "/"
    directory.mkdir(parents=True, exist_ok=True)
    manifest = _get(base + MANIFEST_FILE, timeout_s)
    write_atomic(directory / MANIFEST_FILE, manifest)
    try:
        write_atomic(directory / SIGNATURE_FILE, _get(base + SIGNATURE_FILE, timeout_s))
    except DownloadFailed:
        (directory / SIGNATURE_FILE).unlink(missing_ok=True)  # verification says what is missing
    name = str(json.loads(manifest)["file"])
    if "/" in name or name.startswith("."):
        raise DownloadFailed(f"manifest names an unsafe file {name[:64]!r}")
    part = directory / f"{name}.part"
    have = part.stat().st_size if part.exists() else 0
    if have > artifact.size_bytes:
        part.unlink()
        have = 0
    req = urllib.request.Request(base + name, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r, open(part, "ab") as out:
            if have and getattr(r, "status", 206) == 200:  # the server ignored Range: start over
                out.truncate(0)
                have = 0
            while block := r.read(1 << 20):
                if cancelled():
                    raise Cancelled()
                out.write(block)
                have += len(block)
                progress(round(100.0 * have / artifact.size_bytes, 1))
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadFailed(f"cannot fetch {base + name}: {exc}") from exc
    shutil.move(part, directory / name)
    fsync_dir(directory)
    return directory


def _get(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return bytes(r.read(1 << 20))
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadFailed(f"cannot fetch {url}: {exc}") from exc

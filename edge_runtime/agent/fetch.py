"""Bring the artifact a desired state names into the store, every check passed first: the
version order (no silent downgrade), free space, the download (MQTT chunks or a URL, resumable,
into ``updates/staging/<manifest sha256>``), both signatures and every hash, then the move into
the store. Anything wrong raises (``Refused``, ``TrustError``, ``DownloadFailed``, ``Cancelled``)
before the serving model is touched."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.agent.download import DownloadFailed, MqttDownload, fetch_url
from edge_runtime.agent.models import ModelManager
from edge_runtime.agent.reporter import Reporter
from edge_runtime.config import Config
from edge_runtime.errors import ModelLoadError
from edge_runtime.manifest import read_manifest, verify_artifact
from edge_runtime.store import ModelRef
from edge_runtime.updates.desired import Document, Refused, is_older
from edge_runtime.updates.trust import KeyRing

SPARE_BYTES = 1 << 20
SetState = Callable[..., None]  # (doc, state, percent=None, *, save=True): the updater's progress


class Fetcher:
    def __init__(self, cfg: Config, models: ModelManager, ring: KeyRing, reporter: Reporter, updates_dir: Path,
                 set_state: SetState) -> None:
        self.cfg = cfg
        self.models = models
        self.ring = ring
        self.reporter = reporter
        self.dir = updates_dir
        self.set_state = set_state
        self.download: MqttDownload | None = None  # the MQTT download in progress (chunks are routed to it)

    def staging(self, doc: Document) -> Path:
        assert doc.artifact is not None
        return self.dir / "staging" / doc.artifact.manifest_sha256

    def fetch(self, doc: Document, cancelled: Callable[[], bool]) -> ModelRef:
        art = doc.artifact
        assert art is not None and self.models.store is not None
        store = self.models.store
        ev = {"update_id": doc.update_id, "version": art.version, "name": art.name}
        installed = store.find(art.manifest_sha256)
        self._check_order(doc, installed)
        if installed is not None:  # the same bytes are installed already: no download
            kid = self._verify(doc, store.path(installed))
            self.reporter.event("update_verified", **ev, keyid=kid[:16], already_installed=True)
            return installed
        staging = self.staging(doc)
        free = shutil.disk_usage(self.dir.parent).free
        need = 2 * art.size_bytes + SPARE_BYTES - _size_on_disk(staging)
        self.set_state(doc, "checking_space")
        if free < need:
            raise DownloadFailed(f"not enough disk space in {self.dir.parent}: {free:,} bytes free, {need:,} needed "
                                 "(the artifact and a spare version); free some space or lower keep_versions")
        self.set_state(doc, "downloading", 0.0)
        t0 = time.monotonic()
        path = self._download_to(doc, staging, cancelled)
        self.reporter.event("update_downloaded", **ev, seconds=round(time.monotonic() - t0, 3),
                            bytes=art.size_bytes, free_bytes=free)
        self.set_state(doc, "verifying")
        # over MQTT the whole file was just hashed against the signed sha256 (Staging.finish)
        kid = self._verify(doc, path, file_hashed=not art.url)
        self.reporter.event("update_verified", **ev, keyid=kid[:16])
        self.set_state(doc, "staging")
        ref = store.install(path, move=True, verified=True)
        shutil.rmtree(staging, ignore_errors=True)
        return ref

    def _download_to(self, doc: Document, staging: Path, cancelled: Callable[[], bool]) -> Path:
        art = doc.artifact
        assert art is not None

        def progress(pct: float) -> None:
            self.set_state(doc, "downloading", pct, save=False)

        if art.url:
            return fetch_url(art, staging, progress, cancelled)
        link = self.reporter.link
        if link is None:
            raise DownloadFailed("no [mqtt] section: an MQTT download needs the broker (or give the "
                                 "desired state a url)")
        u = self.cfg.updates
        self.download = MqttDownload(link, fleet=self.cfg.device.fleet, device=self.cfg.device.id, artifact=art,
                                     directory=staging, window=u.chunk_window, stall_s=u.download_stall_s)
        try:
            return self.download.run(progress, cancelled)
        finally:
            self.download = None

    def _verify(self, doc: Document, path: Path, *, file_hashed: bool = False) -> str:
        """Both signatures, and every hash, before anything is installed; the artifact key's id."""
        art = doc.artifact
        assert art is not None
        got = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
        if got != art.manifest_sha256:
            raise Refused(f"manifest.json hashes to {got[:16]}..., the desired state says "
                          f"{art.manifest_sha256[:16]}...")
        kid = self.ring.verify_artifact(path)
        try:
            m = read_manifest(path)
            if file_hashed:
                size = (path / m.file).stat().st_size
                if size != m.size_bytes:
                    raise Refused(f"size mismatch (manifest says {m.size_bytes} bytes, file has {size} bytes)")
            else:
                verify_artifact(path, m)  # model file against the manifest: sha256 and size
        except ModelLoadError as exc:
            raise Refused(exc.reason) from exc
        if (m.sha256, m.size_bytes, m.name, m.version) != (art.sha256, art.size_bytes, art.name, art.version):
            raise Refused("the manifest does not match the desired state's artifact (name, version, sha256 or size)")
        return kid

    def _check_order(self, doc: Document, installed: ModelRef | None) -> None:
        art = doc.artifact
        assert art is not None and self.models.store is not None
        cur: Any = self.models.manifest()
        if cur is None or doc.force:
            return
        created = read_manifest(self.models.store.path(installed)).created_at if installed is not None else None
        if is_older((art.version, created), (cur.version, cur.created_at)):
            raise Refused(f"version {art.version} is older than the active {cur.version}; a downgrade needs "
                          "a desired state with force = true (publish --force)")


def _size_on_disk(d: Path) -> int:
    try:
        return sum(p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file())
    except OSError:
        return 0

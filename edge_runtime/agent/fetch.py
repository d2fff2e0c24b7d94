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
from edge_runtime.updates.desired import ArtifactRef, Document, Refused, is_older
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

    def staging(self, doc: Document, art: ArtifactRef | None = None) -> Path:
        art = art or doc.artifact
        assert art is not None
        return self.dir / "staging" / art.manifest_sha256

    def fetch(self, doc: Document, cancelled: Callable[[], bool], art: ArtifactRef | None = None) -> ModelRef:
        """The document's artifact (or ``art``, an experiment's candidate: no version order, no
        update events or progress) installed and verified in the store."""
        primary = art is None
        art = art or doc.artifact
        assert art is not None and self.models.store is not None
        store = self.models.store
        state = self.set_state if primary else _no_state
        event = self.reporter.event if primary else _no_event
        ev = {"update_id": doc.update_id, "version": art.version, "name": art.name}
        installed = store.find(art.manifest_sha256)
        if primary:
            self._check_order(doc, installed)
        if installed is not None:  # the same bytes are installed already: no download
            kid = self._verify(art, store.path(installed))
            event("update_verified", **ev, keyid=kid[:16], already_installed=True)
            return installed
        staging = self.staging(doc, art)
        free = shutil.disk_usage(self.dir.parent).free
        need = 2 * art.size_bytes + SPARE_BYTES - _size_on_disk(staging)
        state(doc, "checking_space")
        if free < need:
            raise DownloadFailed(f"not enough disk space in {self.dir.parent}: {free:,} bytes free, {need:,} needed "
                                 "(the artifact and a spare version); free some space or lower keep_versions")
        state(doc, "downloading", 0.0)
        t0 = time.monotonic()
        path = self._download_to(doc, art, staging, cancelled, state)
        event("update_downloaded", **ev, seconds=round(time.monotonic() - t0, 3), bytes=art.size_bytes,
              free_bytes=free)
        state(doc, "verifying")
        # over MQTT the whole file was just hashed against the signed sha256 (Staging.finish)
        kid = self._verify(art, path, file_hashed=not art.url)
        event("update_verified", **ev, keyid=kid[:16])
        state(doc, "staging")
        ref = store.install(path, move=True, verified=True)
        shutil.rmtree(staging, ignore_errors=True)
        return ref

    def _download_to(self, doc: Document, art: ArtifactRef, staging: Path, cancelled: Callable[[], bool],
                     state: SetState) -> Path:
        def progress(pct: float) -> None:
            state(doc, "downloading", pct, save=False)

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

    def _verify(self, art: ArtifactRef, path: Path, *, file_hashed: bool = False) -> str:
        """Both signatures, and every hash, before anything is installed; the artifact key's id."""
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


def _no_state(*args: Any, **kwargs: Any) -> None:
    pass


def _no_event(*args: Any, **kwargs: Any) -> None:
    pass


def _size_on_disk(d: Path) -> int:
    try:
        return sum(p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file())
    except OSError:
        return 0

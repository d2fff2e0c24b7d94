"""The device's model store: installed artifact versions and which one is active.

    data_dir/models/<name>/<version>/     an installed artifact (never modified after install)
    data_dir/models/active.json           {"name", "version", "previous": {...} | null,
                                           "committed": [{...}, ...]}

``committed`` lists the versions that passed probation (oldest first); ``previous`` is the last
of them that is not the active one, so a version that failed is never ``previous``.

Installs copy into a temporary directory, fsync every file, then rename into place, so a
power cut leaves either the whole version or nothing. The active pointer is rewritten the
same way (temp file + fsync + rename), so it always names a complete version. Updates and
rollbacks build on ``install`` / ``activate`` / ``previous``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelLoadError
from edge_runtime.manifest import MANIFEST_FILE, SIGNATURE_FILE, read_manifest, verify_artifact

log = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader or a power cut sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class ModelStore:
    """Installed model versions under ``data_dir/models``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "models"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, ref: ModelRef) -> Path:
        return self.root / ref.name / ref.version

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        vs = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return [p.name for p in sorted(vs, key=lambda p: p.stat().st_mtime)]

    def has(self, ref: ModelRef) -> bool:
        return (self.path(ref) / "manifest.json").is_file()

    def install(self, artifact_dir: str | Path, *, move: bool = False, verified: bool = False) -> ModelRef:
        """Verify an artifact and copy it into the store; return its (name, version).
        ``move`` renames the files instead (a staged download on the same file system);
        ``verified``: the caller has just hashed the model file against this manifest, so only
        its size is checked here (it is hashed again when it is loaded).

        Installing a version that is already there is a no-op, so a restart can call this
        every time."""
        src = Path(artifact_dir)
        manifest = _check_size(src) if verified else verify_artifact(src)
        ref = ModelRef(_safe(manifest.name, src), _safe(manifest.version, src))
        dest = self.path(ref)
        if self.has(ref):
            return ref
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}.", dir=dest.parent))
        try:
            for f in sorted(src.iterdir()):
                if f.is_file() and f.name in (MANIFEST_FILE, SIGNATURE_FILE, manifest.file):
                    if move:
                        os.replace(f, tmp / f.name)
                    else:
                        shutil.copyfile(f, tmp / f.name)
                    with open(tmp / f.name, "rb") as fh:
                        os.fsync(fh.fileno())
            if not (move and verified):
                verify_artifact(tmp)  # the copy, not only the source, must match its manifest
            fsync_dir(tmp)
            if dest.exists():  # a half-installed leftover without a manifest
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(dest.parent)
        log.info("installed %s version %s into %s", ref.name, ref.version, dest)
        return ref

    def _read_pointer(self) -> dict[str, Any] | None:
        p = self.root / ACTIVE_FILE
        try:
            d = json.loads(p.read_bytes())
            ModelRef(str(d["name"]), str(d["version"]))  # the fields a pointer must have
            return dict(d)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(p, f"the active-model pointer is unreadable: {exc}",
                                 hint="Delete it and restart; the agent reinstalls the configured artifact.") from exc

    def recover_pointer(self) -> str | None:
        """If the active pointer is unreadable (a torn write on a card that lies about fsync, a
        bad sector), move it aside and point at the newest installed version that verifies, so
        the device starts; return what was done, for the agent to report (None: nothing to do)."""
        try:
            self._read_pointer()
            return None
        except ModelLoadError as exc:
            reason = exc.reason
        p = self.root / ACTIVE_FILE
        aside = p.with_name(f"{ACTIVE_FILE}.corrupt-{int(time.time())}")
        p.replace(aside)
        newest: tuple[float, ModelRef] | None = None
        for name_dir in (d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for v in self.versions(name_dir.name):
                ref = ModelRef(name_dir.name, v)
                try:
                    verify_artifact(self.path(ref))
                except ModelLoadError:
                    continue
                mtime = self.path(ref).stat().st_mtime
                if newest is None or mtime > newest[0]:
                    newest = (mtime, ref)
        if newest is not None:
            self.activate(newest[1], commit=True)
        what = (f"the active-model pointer was unreadable ({reason}); moved to {aside.name}, "
                + (f"now {newest[1].name} version {newest[1].version}, the newest installed version that verifies"
                   if newest else "no installed version verifies"))
        log.error("%s", what)
        return what

    def active(self) -> ModelRef | None:
        d = self._read_pointer()
        return ModelRef(d["name"], d["version"]) if d else None

    def previous(self) -> ModelRef | None:
        d = self._read_pointer()
        prev = d.get("previous") if d else None
        return ModelRef(prev["name"], prev["version"]) if prev else None

    def committed(self) -> list[ModelRef]:
        """Versions that passed probation (or were installed from the config), oldest first."""
        d = self._read_pointer() or {}
        out = [ModelRef(c["name"], c["version"]) for c in d.get("committed") or []]
        if not out and d.get("previous"):  # a pointer written before ``committed`` existed
            out = [ModelRef(d["previous"]["name"], d["previous"]["version"])]
        return out

    def activate(self, ref: ModelRef, *, commit: bool = False, forget: ModelRef | None = None) -> None:
        """Make an installed version the active one. ``commit``: it needs no probation (the
        configured artifact). ``forget``: a version that failed or was rolled back leaves the
        committed list, so it can never be ``previous``."""
        if not self.has(ref):
            raise ModelLoadError(self.path(ref), "this version is not installed")
        committed = [c for c in self.committed() if c != forget]
        if commit:
            committed = [c for c in committed if c != ref] + [ref]
        self._write(ref, committed[-16:])
        log.info("active model is now %s version %s", ref.name, ref.version)

    def commit(self, ref: ModelRef) -> None:
        """The active version passed probation."""
        committed = [c for c in self.committed() if c != ref] + [ref]
        self._write(ref, committed[-16:])

    def _write(self, active: ModelRef, committed: list[ModelRef]) -> None:
        prev = next((c for c in reversed(committed) if c != active), None)
        doc = {**active.to_dict(), "previous": prev.to_dict() if prev else None,
               "committed": [c.to_dict() for c in committed]}
        write_atomic(self.root / ACTIVE_FILE, json.dumps(doc, indent=1).encode())

    def find(self, manifest_sha256: str) -> ModelRef | None:
        """An installed version whose manifest.json hashes to this (an update already on disk)."""
        import hashlib

        for name_dir in self.root.iterdir():
            if not name_dir.is_dir() or name_dir.name.startswith("."):
                continue
            for v in self.versions(name_dir.name):
                try:
                    data = (name_dir / v / MANIFEST_FILE).read_bytes()
                except OSError:
                    continue
                if hashlib.sha256(data).hexdigest() == manifest_sha256:
                    return ModelRef(name_dir.name, v)
        return None

    def prune(self, keep_versions: int) -> list[ModelRef]:
        """Delete the oldest versions beyond ``keep_versions`` per model; never active or previous."""
        protected = {r for r in (self.active(), self.previous()) if r is not None}
        removed: list[ModelRef] = []
        for name_dir in self.root.iterdir():
            if not name_dir.is_dir() or name_dir.name.startswith("."):
                continue
            versions = self.versions(name_dir.name)
            for v in versions[: max(0, len(versions) - keep_versions)]:
                ref = ModelRef(name_dir.name, v)
                if ref in protected:
                    continue
                shutil.rmtree(self.path(ref), ignore_errors=True)
                removed.append(ref)
        return removed

    def configured_wins(self, artifact_dir: str | Path | None) -> bool:
        """Does the configured artifact take over at start? Yes when the store has never seen
        that version (first start, or the operator configured a new one) or nothing is active;
        otherwise the active version stays, as the update machinery left it."""
        if artifact_dir is None:
            return False
        m = read_manifest(artifact_dir)
        wanted = ModelRef(_safe(m.name, Path(artifact_dir)), _safe(m.version, Path(artifact_dir)))
        return not self.has(wanted) or self.active() is None

    def ensure(self, artifact_dir: str | Path | None) -> ModelRef:
        """At start: install and activate the configured artifact when it takes over (see
        ``configured_wins``); a restart never undoes an update."""
        if artifact_dir is not None and self.configured_wins(artifact_dir):
            ref = self.install(artifact_dir)
            self.activate(ref, commit=True)
            return ref
        active = self.active()
        if active is None:
            raise ModelLoadError(self.root, "no model is installed and [model] artifact is not set",
                                 hint="Set artifact = \"/path/to/artifact\" in [model].")
        if not self.has(active):
            raise ModelLoadError(self.path(active), "the active model version is missing from the store",
                                 hint="Set [model] artifact to reinstall it.")
        return active


def resolve_artifact(data_dir: str | Path, artifact_dir: str | Path | None) -> Path:
    """The artifact directory a device config means: what the agent serves, or would serve if
    it started now. ``predict CONFIG``, ``serve CONFIG``, ``load(config=)`` and the agent all
    ask this one question, so after an update none of them runs the old model.

    Reads only: a data dir where no agent has run is not created.
    """
    if (Path(data_dir) / "models").is_dir():
        store = ModelStore(data_dir)
        if not store.configured_wins(artifact_dir):
            active = store.active()
            if active is not None and store.has(active):
                return store.path(active)
    if artifact_dir is None:
        raise ModelLoadError(Path(data_dir) / "models", "no model is installed and [model] artifact is not set",
                             hint="Set artifact = \"/path/to/artifact\" in [model].")
    return Path(artifact_dir)


def _check_size(src: Path) -> Any:
    from edge_runtime.errors import ArtifactIntegrityError

    m = read_manifest(src)
    size = (src / m.file).stat().st_size
    if size != m.size_bytes:
        raise ArtifactIntegrityError(src, "size", f"{m.size_bytes} bytes", f"{size} bytes")
    return m


def _safe(part: str, src: Path) -> str:
    if not part or part in (".", "..") or "/" in part or "\\" in part or part.startswith("."):
        raise ModelLoadError(src, f"manifest name/version {part!r} cannot be a directory name")
    return part

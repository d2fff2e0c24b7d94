"""The agent's model manager: the store of installed versions, which one is active, and the
Runtime serving it. The update state machine (``agent.updater``) drives ``activate``,
``commit`` and ``roll_back``; each swaps the Runtime (the new version fully loaded and
smoke-tested first) and then moves the store's pointer (temp file + fsync + rename), so a
power cut at any step restarts on a complete version."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from edge_runtime.config import Config
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.loading import load
from edge_runtime.manifest import read_manifest, verify_artifact
from edge_runtime.model import LoadedModel
from edge_runtime.options import RuntimeOptions
from edge_runtime.runtime import Runtime
from edge_runtime.store import ModelRef, ModelStore
from edge_runtime.updates.trust import KeyRing

log = logging.getLogger(__name__)


class ModelManager:
    """Installs the configured artifact when it takes over, serves the active version."""

    def __init__(self, cfg: Config, ring: KeyRing | None = None) -> None:
        self.cfg = cfg
        self.ring = ring or KeyRing()
        self.data_dir = Path(cfg.device.data_dir)
        self.store: ModelStore | None = None
        self.runtime: Runtime | None = None
        self.active: ModelRef | None = None
        self.start_problems: list[dict[str, Any]] = []  # what start had to work around, for events
        self.lock = threading.RLock()  # one activation / rollback at a time
        self._retired: LoadedModel | None = None  # closed at the next swap, not while calls may be in it

    def start(self, prefer: ModelRef | None = None) -> Runtime:
        """Install (when the configured artifact takes over) and load the active version.

        A device never goes dark because one file is bad: if the active version is corrupt or
        missing, its store copy is rebuilt from the configured artifact when that is the same
        version and intact; else the newest committed version that loads serves; else the
        Runtime starts without a model (its fallback answers, if configured) and reports
        ``model_error``, so an update can still reach it. What it had to do is in
        ``start_problems``. ``prefer``: load this installed version (a crash-loop rollback)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = ModelStore(self.data_dir)
        self.store = store
        recovered = store.recover_pointer()
        if recovered:
            self.start_problems.append({"name": None, "version": None, "reason": recovered, "repair": recovered})
        self._check_configured()
        try:
            ref = store.ensure(self.cfg.model.artifact) if prefer is None else prefer
        except ModelLoadError as exc:  # the active version is gone from the store
            active = store.active()
            if active is None:
                art = self.cfg.model.artifact
                if art is not None and Path(exc.path) == Path(art):  # say which config line to fix
                    raise ModelLoadError(exc.path, exc.reason, hint=f"Fix [model] artifact in {self.cfg.file}: it "
                                         "must name the directory edge-convert --out wrote.") from exc
                raise
            self.start_problems.append({**active.to_dict(), "reason": str(exc)})
            ref = active
        for old in store.prune(self.cfg.updates.keep_versions):
            log.info("pruned %s version %s (keep_versions = %d)", old.name, old.version,
                     self.cfg.updates.keep_versions)
        rt = self._try(ref) or self._rebuild(ref)
        served = ref
        if rt is None:
            for cand in (c for c in reversed(store.committed()) if c != ref):
                rt = self._try(cand)
                if rt is not None:
                    store.activate(cand, forget=ref)
                    served = cand
                    break
        if rt is None:  # nothing loads: serve without a model (the fallback, if any) and say so
            opts = self.cfg.runtime_options()
            rt = Runtime(None, RuntimeOptions.from_kwargs(**opts), artifact_path=store.path(ref),
                         load_error=ModelLoadError(store.path(ref), "no installed version could be loaded"))
        if prefer is not None and served == prefer and rt.serving.model is not None:
            failed = store.active()  # the version in probation that crash-looped
            if failed is not None and failed != prefer:  # the pointer follows before anything is reported
                store.activate(prefer, forget=failed)
        self.runtime, self.active = rt, served
        return rt

    def _try(self, ref: ModelRef) -> Runtime | None:
        """A Runtime serving ``ref``'s model, or None (the reason goes to ``start_problems``)."""
        assert self.store is not None
        try:
            rt = load(self.store.path(ref), **self.cfg.runtime_options())
        except ModelLoadError as exc:
            reason = str(exc)
        else:
            if rt.serving.model is not None:
                return rt
            reason = str(rt.serving.load_error)  # it would serve only its fallback
            rt.close()
        self.start_problems.append({**ref.to_dict(), "reason": reason})
        log.error("cannot serve %s version %s: %s", ref.name, ref.version, reason)
        return None

    def _rebuild(self, ref: ModelRef) -> Runtime | None:
        """Reinstall ``ref`` from the configured artifact when that is the same version, intact."""
        art = self.cfg.model.artifact
        assert self.store is not None
        if art is None:
            return None
        try:
            m = verify_artifact(art)
            if (m.name, m.version) != (ref.name, ref.version):
                return None
            if self.ring.artifact:
                self.ring.verify_artifact(art)
        except EdgeRuntimeError as exc:
            log.error("the configured artifact cannot replace the damaged copy: %s", exc)
            return None
        shutil.rmtree(self.store.path(ref), ignore_errors=True)
        self.store.install(art)
        log.warning("rebuilt %s version %s in the store from the configured artifact %s", ref.name, ref.version, art)
        rt = self._try(ref)
        if rt is not None:  # the failure _try(ref) recorded before was repaired
            self.start_problems[-1]["repair"] = f"the store copy was damaged; reinstalled from the configured {art}"
        return rt

    def _check_configured(self) -> None:
        """With artifact keys configured, the configured first artifact must verify too."""
        art = self.cfg.model.artifact
        if art is not None and self.ring.artifact and self.store is not None and self.store.configured_wins(art):
            self.ring.verify_artifact(art)

    def manifest(self, ref: ModelRef | None = None) -> Any:
        assert self.store is not None
        ref = ref or self.active
        return read_manifest(self.store.path(ref)) if ref is not None else None

    def activate(self, ref: ModelRef, *, commit: bool = False) -> None:
        """Serve an installed version: load and smoke-test it, swap it in, then move the pointer."""
        assert self.store is not None and self.runtime is not None
        with self.lock:
            old = self.runtime.swap(self.store.path(ref))
            self.store.activate(ref, commit=commit)
            self.active = ref
            self._retire(old)

    def commit(self, ref: ModelRef) -> None:
        assert self.store is not None
        with self.lock:
            self.store.commit(ref)

    def roll_back(self, to: ModelRef, *, failed: ModelRef | None) -> None:
        """Serve ``to`` again; ``failed`` leaves the committed list (never ``previous``)."""
        assert self.store is not None and self.runtime is not None
        with self.lock:
            old = self.runtime.swap(self.store.path(to))
            self.store.activate(to, forget=failed)
            self.active = to
            self._retire(old)

    def versions(self) -> tuple[ModelRef | None, ModelRef | None]:
        """(active, previous) read together, so a status never pairs one from before a swap with
        one from after it."""
        with self.lock:
            return self.active, (self.store.previous() if self.store is not None else None)

    def _retire(self, old: LoadedModel | None) -> None:
        if self._retired is not None:
            self._retired.close()
        self._retired = old

    def models(self) -> list[dict[str, str]]:
        """Active models as the status reports them."""
        return [self.active.to_dict()] if self.active is not None else []

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
        if self._retired is not None:
            self._retired.close()
            self._retired = None

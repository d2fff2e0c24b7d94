"""The agent's model manager: the store of installed versions, which one is active, and the
Runtime serving it. The update state machine builds on ``activate``."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_runtime.config import Config
from edge_runtime.loading import load
from edge_runtime.runtime import Runtime
from edge_runtime.store import ModelRef, ModelStore

log = logging.getLogger(__name__)


class ModelManager:
    """Installs the configured artifact when it takes over, serves the active version."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data_dir = Path(cfg.device.data_dir)
        self.store: ModelStore | None = None
        self.runtime: Runtime | None = None
        self.active: ModelRef | None = None

    def start(self) -> Runtime:
        """Install (when the configured artifact takes over) and load the active version."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = ModelStore(self.data_dir)
        ref = store.ensure(self.cfg.model.artifact)
        self.store, self.active = store, ref
        for old in store.prune(self.cfg.updates.keep_versions):
            log.info("pruned %s version %s (keep_versions = %d)", old.name, old.version,
                     self.cfg.updates.keep_versions)
        self.runtime = load(store.path(ref), **self.cfg.runtime_options())
        return self.runtime

    def activate(self, ref: ModelRef) -> None:
        """Serve an installed version: load and smoke-test it, swap it in, then move the pointer."""
        assert self.store is not None and self.runtime is not None
        old = self.runtime.swap(self.store.path(ref))
        self.store.activate(ref)
        self.active = ref
        if old is not None:
            old.close()

    def models(self) -> list[dict[str, str]]:
        """Active models as the status reports them."""
        return [self.active.to_dict()] if self.active is not None else []

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()

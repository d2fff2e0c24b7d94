"""The experiment a signed desired state asks for, kept running on this device.

A desired document may carry ``"experiment": {"artifact": {...}, "mode", "weight", "key",
"shadow_sample"}`` next to its ``artifact``. The candidate is fetched, verified (both signatures,
every hash) and installed like any update, then served beside the model; a document without it
ends an experiment that a document started (one from the ``[experiment]`` config section stays).
Reconciled on every accepted document and after every reconnect, so a restarted agent runs it
again. A candidate that cannot be fetched or loaded is reported and the model serves alone.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

from edge_runtime.agent.fetch import Fetcher
from edge_runtime.agent.models import ModelManager
from edge_runtime.agent.reporter import Reporter
from edge_runtime.errors import EdgeRuntimeError, TrustError
from edge_runtime.updates.desired import Document, Refused

log = logging.getLogger(__name__)


class Experiments:
    def __init__(self, models: ModelManager, fetcher: Fetcher, reporter: Reporter) -> None:
        self.models = models
        self.fetcher = fetcher
        self.reporter = reporter
        self.running: str | None = None  # ident of the experiment a document started
        self.failed: str | None = None  # ident that failed: not retried until the document changes

    def reconcile(self, doc: Document | None, cancelled: Callable[[], bool]) -> None:
        rt = self.models.runtime
        if rt is None:
            return
        exp = doc.experiment if doc is not None else None
        if exp is None:
            if self.running is not None:
                self.running = None
                rt.end_experiment()
                self.reporter.event("experiment_ended", update_id=doc.update_id if doc else None,
                                    reason="the desired state no longer carries an experiment")
            return
        if exp.ident in (self.running, self.failed):
            return
        ev = {"update_id": doc.update_id if doc else None, "version": exp.artifact.version,
              "name": exp.artifact.name, **exp.options()}
        try:
            assert doc is not None and self.models.store is not None
            ref = self.fetcher.fetch(doc, cancelled, exp.artifact)
            rt.start_experiment(self.models.store.path(ref), **exp.options())
        except (EdgeRuntimeError, OSError, ValueError) as exc:
            if isinstance(exc, (Refused, TrustError)) and doc is not None:  # never reused
                shutil.rmtree(self.fetcher.staging(doc, exp.artifact), ignore_errors=True)
            reason = getattr(exc, "reason", None) or str(exc)
            log.error("experiment of update %s not started: %s", ev["update_id"], reason)
            self.failed = exp.ident
            self.reporter.event("experiment_failed", **ev, reason=str(reason)[:500])
            return
        self.running, self.failed = exp.ident, None
        self.reporter.event("experiment_started", **ev)

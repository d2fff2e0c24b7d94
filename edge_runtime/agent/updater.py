"""The update state machine: converge on the signed desired state, one step at a time.

    received -> space checked -> downloading -> verified -> staged -> loaded + smoke-tested
             -> activated -> probation -> committed | rolled back

Every step is an event carrying the update id, and the retained ``status`` shows the active
and previous versions and the update in hand with its percent. Any failure before activation
leaves the serving model untouched; a breach in probation, a crash loop or a signed
``rollback`` command swaps the previous committed version back in.

Inputs, all signed with a trusted deployment key: retained desired states and ``update`` /
``rollback`` commands (``agent.desired_state`` decides which document wins), key sets
(``agent.keyset``). ``agent.fetch`` brings an artifact in, checked. One worker thread does the
work; the MQTT thread only queues. What must survive a restart is in ``UpdateState``, written
before the step it records takes effect.

Fault injection for tests: ``EDGE_RUNTIME_CRASH_AT=<state>`` makes the agent SIGKILL itself right
after recording that state (``downloading``, ``verifying``, ``staging``, ``activating``,
``activated``), to prove every step survives a power cut.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from edge_runtime.agent.desired_state import DesiredStates, uid_of
from edge_runtime.agent.download import Cancelled, DownloadFailed
from edge_runtime.agent.experiments import Experiments
from edge_runtime.agent.fault_injection import crash_point
from edge_runtime.agent.fetch import Fetcher
from edge_runtime.agent.keyset import KeySet
from edge_runtime.agent.models import ModelManager
from edge_runtime.agent.reporter import Reporter
from edge_runtime.config import Config
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError, TrustError
from edge_runtime.store import ModelRef
from edge_runtime.sync.topics import Topics
from edge_runtime.updates import probation
from edge_runtime.updates.desired import Document, Refused
from edge_runtime.updates.state import UpdateState
from edge_runtime.updates.trust import KeyRing

log = logging.getLogger(__name__)


class Updater:
    def __init__(self, cfg: Config, topics: Topics, models: ModelManager, reporter: Reporter,
                 ring: KeyRing) -> None:
        self.cfg = cfg
        self.topics = topics
        self.models = models
        self.reporter = reporter
        self.dir = Path(cfg.device.data_dir) / "updates"
        self.state = UpdateState(self.dir)
        self.limits = probation.Limits(
            window_s=cfg.updates.probation_s, min_predictions=cfg.updates.probation_min_predictions,
            max_error_rate=cfg.updates.max_error_rate, max_fallback_rate=cfg.updates.max_fallback_rate,
            max_p99_ms=cfg.updates.max_p99_ms, max_p99_ratio=cfg.updates.max_p99_ratio,
            p99_slack_ms=cfg.updates.p99_slack_ms)
        self._jobs: queue.Queue[tuple[str, Any]] = queue.Queue(256)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.keys = KeySet(ring, self.state, reporter, cfg.device.fleet, models.lock)  # a rotated set applies now
        self.desired = DesiredStates(cfg, ring, self.state, reporter)
        self.fetcher = Fetcher(cfg, models, ring, reporter, self.dir, self._set_current)
        self.experiments = Experiments(models, self.fetcher, reporter)
        self.progress: dict[str, Any] | None = None  # the "update" field of the status
        self._probation_started = 0.0
        self._inconclusive_reported = 0
        self._applying: str | None = None  # update id in hand
        self._set_aside: Document | None = None  # download interrupted by a newer job, resumed after it

    # -- start and stop ----------------------------------------------------------------------------
    def before_load(self) -> ModelRef | None:
        """Before the model is loaded: count this start against a version still in probation
        (a crash loop rolls back, as Mender and the AWS IoT OTA agent do); returns the version
        to load instead when it must roll back now."""
        prev = self.state.count_start(self.cfg.updates.probation_max_restarts)
        return ModelRef(prev["name"], prev["version"]) if prev else None

    def start(self) -> None:
        p = self.state.probation
        active = self.models.active
        if p and active is not None:
            failed = ModelRef(p["name"], p["version"])
            if active != failed or p["restarts"] > self.cfg.updates.probation_max_restarts:
                # started on another version: the crash loop (or a bad file) already decided
                if self.models.store is not None:
                    self.models.store.activate(active, forget=failed)
                self._end(p["update_id"], "rolled_back", "update_rolled_back", version=p["version"],
                          to_version=active.version,
                          reason=f"the agent restarted {p['restarts']} times in probation "
                                 f"(probation_max_restarts = {self.cfg.updates.probation_max_restarts})")
                self.state.probation = None
                self.state.save()
            else:
                self._probation_started = time.monotonic()
                self._set_progress(p["update_id"], p["version"], "probation", 100.0)
        if self.state.reset_reason:
            self.reporter.event("update_state_recovered", reason=self.state.reset_reason)
        self.reporter.start_problems(self.models.start_problems, active)
        self._thread = threading.Thread(target=self._work, name="agent-updates", daemon=True)
        self._thread.start()
        cur = self.state.current
        if cur and cur.get("state") not in ("probation",):
            self._jobs.put(("resume", None))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self._jobs.put_nowait(("stop", None))
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self.state.probation:
            self.state.probation["clean_stop"] = True
            self.state.save()

    # -- inputs (MQTT thread, command worker) --------------------------------------------------------
    def on_desired(self, topic: str, payload: bytes) -> None:
        level = self.topics.desired_level(topic)
        if level is None:
            return
        known = self.state.docs.get(level)
        if payload and known is not None:
            try:
                same = uid_of(json.loads(payload)) == uid_of(known)
            except (ValueError, RecursionError):
                same = False
            if same:  # the retained copy again (every reconnect): nothing new, just make sure
                self.tick("reconcile")
                return
        self._queue("desired", (level, payload), f"desired state on {topic}")

    def on_keys(self, payload: bytes) -> None:
        if payload:
            self._queue("keys", payload, "key set")

    def on_artifact(self, kind: str, artifact_id: str, payload: bytes) -> None:
        d = self.fetcher.download
        if d is not None and d.aid == artifact_id:
            d.on_message(kind, payload)

    def cmd_update(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "update", "doc": {...}, "signatures": [...]}``: a desired state sent once."""
        doc = self.desired.command_document(cmd, "desired")
        if isinstance(doc, dict):
            return doc
        self._jobs.put(("apply", doc))
        return {"type": "cmd_accepted", "update_id": doc.update_id, "version": doc.artifact.version
                if doc.artifact else None}

    def cmd_rollback(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "rollback", "doc": {"type": "rollback", ...}, "signatures": [...]}``."""
        doc = self.desired.command_document(cmd, "rollback")
        if isinstance(doc, dict):
            return doc
        done = threading.Event()
        result: dict[str, Any] = {}
        self._jobs.put(("rollback", (doc, done, result)))
        done.wait(120)
        return result or {"type": "update_failed", "reason": "rollback did not finish in 120 s",
                          "update_id": doc.update_id}

    def cmd_keys(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``{"cmd": "keys", "doc": {"type": "keyset", ...}, "signatures": [...]}``."""
        return self.keys.rotate({"doc": cmd.get("doc"), "signatures": cmd.get("signatures")})

    def tick(self, kind: str = "tick") -> None:
        self._queue(kind)

    def _queue(self, kind: str, arg: Any = None, what: str = "") -> None:
        try:
            self._jobs.put_nowait((kind, arg))
        except queue.Full:  # what is retained comes back on the next connect; a tick comes again
            if what:
                log.error("update queue full; %s dropped until the next connect", what)

    def status(self) -> dict[str, Any]:
        active, prev = self.models.versions()
        return {"active": active.to_dict() if active else None, "previous": prev.to_dict() if prev else None,
                "update": dict(self.progress) if self.progress else None,
                "outcomes": dict(list(self.state.outcomes.items())[-8:])}  # how recent updates ended

    # -- the worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                kind, arg = self._jobs.get(timeout=1.0)
            except queue.Empty:
                kind, arg = "tick", None
            try:
                if kind == "stop":
                    return
                self._run_job(kind, arg)
                aside = self._set_aside
                if aside is not None and kind != "tick" and not self._stop.is_set():
                    self._apply(aside, resumed=True)  # what interrupted it did not replace it
            except Exception:  # never lose the worker
                log.exception("update step %s failed unexpectedly", kind)

    def _run_job(self, kind: str, arg: Any) -> None:
        if kind == "desired":
            self._on_desired(*arg)
        elif kind == "apply":
            self._apply(arg)
            self.experiments.reconcile(arg, self._stop.is_set)
        elif kind == "resume":
            self._resume()
        elif kind == "reconcile":
            self._reconcile()
        elif kind == "keys":
            self.keys.on_retained(arg)
        elif kind == "rollback":
            doc, done, result = arg
            try:
                result.update(self._rollback_cmd(doc))
            finally:
                done.set()
        elif kind == "tick":
            self._probation_tick()

    def _on_desired(self, level: str, payload: bytes) -> None:
        if self.desired.receive(level, payload):
            self._reconcile()

    def _reconcile(self) -> None:
        doc = self.desired.effective()
        if doc is not None and doc.update_id not in self.state.outcomes and not (
                self.state.probation and self.state.probation.get("update_id") == doc.update_id):
            cur = self.state.current
            self._apply(doc, resumed=bool(cur and cur.get("id") == doc.update_id))
        self.experiments.reconcile(doc, self._stop.is_set)

    def _resume(self) -> None:
        cur = self.state.current
        if not cur:
            return
        try:
            doc = self.desired.recheck(cur["signed"])
        except (Refused, TrustError) as exc:  # the keys changed since: drop it, loudly
            self._end(cur["id"], "failed", "update_failed", version=cur.get("version"),
                      reason=f"could not resume after a restart: {exc.reason}")
            return
        log.info("resuming update %s (version %s) from state %s", doc.update_id, cur.get("version"), cur.get("state"))
        self._apply(doc, resumed=True)

    # -- one update, step by step ------------------------------------------------------------------------
    def _apply(self, doc: Document, *, resumed: bool = False) -> None:
        art = doc.artifact
        assert art is not None
        uid = doc.update_id
        ev = {"update_id": uid, "version": art.version, "name": art.name}
        aside, self._set_aside = self._set_aside, None
        if aside is not None and aside.update_id != uid:
            assert aside.artifact is not None
            self._end(aside.update_id, "superseded", "update_failed", version=aside.artifact.version,
                      name=aside.artifact.name, reason=f"superseded by update {uid} (version {art.version})")
        if self.state.probation:  # a newer update while one is in probation: that one stays uncommitted
            prev = self.state.probation
            log.info("version %s leaves probation undecided: update %s arrived", prev["version"], uid)
            self.state.probation = None
            self._end(prev["update_id"], "superseded", None)
        if not resumed:
            self._set_current(doc, "received")
            self.reporter.event("update_received", **ev, target=doc.target_key, sequence=doc.sequence,
                                force=doc.force)
        self._applying = uid
        active = self.models.active
        if active is not None and (active.name, active.version) == (art.name, art.version):
            # already serving it (an earlier update, or the configured artifact)
            self._end(uid, "committed", "update_committed", **ev, reason="already the active version")
            return
        try:
            self._activate(doc, self.fetcher.fetch(doc, lambda: self._stop.is_set() or self._newer_waiting()))
        except Cancelled:  # kept on disk: resumed after the job that interrupted it, or on restart
            log.info("update %s set aside: %s", uid, "agent stopping" if self._stop.is_set() else "a newer job")
            if not self._stop.is_set():
                self._set_aside = doc
        except (Refused, TrustError) as exc:
            shutil.rmtree(self.fetcher.staging(doc), ignore_errors=True)  # never reused
            self._end(uid, "refused", "update_refused", **ev, reason=exc.reason)
        except (DownloadFailed, EdgeRuntimeError, OSError, ValueError) as exc:
            self._end(uid, "failed", "update_failed", **ev, reason=str(exc)[:500])

    def _newer_waiting(self) -> bool:
        """Another desired state, command or a stop is queued: set this download aside (it stays
        on disk and resumes after that job unless the job replaced it)."""
        with self._jobs.mutex:
            jobs = list(self._jobs.queue)
        for kind, arg in jobs:
            if kind in ("rollback", "stop"):
                return True
            if kind == "apply" and arg.update_id != self._applying:
                return True
            if kind == "desired":
                try:
                    if uid_of(json.loads(arg[1])) != self._applying:
                        return True
                except (ValueError, RecursionError):
                    continue
        return False

    def _activate(self, doc: Document, ref: ModelRef) -> None:
        art = doc.artifact
        assert art is not None and self.models.runtime is not None
        uid = doc.update_id
        ev = {"update_id": uid, "version": art.version, "name": art.name}
        previous = self.models.active
        baseline = probation.figures(self.models.runtime.serving.metrics)
        self._set_current(doc, "activating")
        try:
            self.models.activate(ref)  # loads and smoke-tests first: a failure changes nothing
        except ModelLoadError as exc:
            self._end(uid, "failed", "update_failed", **ev,
                      reason=f"the new version failed to load or its smoke test: {exc.reason}")
            return
        crash_point("activated")
        with self.state.lock:
            self.state.probation = {"update_id": uid, "name": ref.name, "version": ref.version,
                                    "previous": previous.to_dict() if previous else None,
                                    "started_at": time.time(), "restarts": 0, "clean_stop": False,
                                    "baseline": baseline.to_dict()}
            self.state.current = None
            self.state.save()
        self._probation_started = time.monotonic()
        self._inconclusive_reported = 0
        self._set_progress(uid, art.version, "probation", 100.0)
        self.reporter.event("update_activated", **ev, previous=previous.to_dict() if previous else None,
                            smoke_tested=True, probation_s=self.limits.window_s,
                            probation_min_predictions=self.limits.min_predictions)
        self.reporter.publish_status()
        if self.limits.window_s == 0 and self.limits.min_predictions == 0:
            self._probation_tick()

    # -- probation -------------------------------------------------------------------------------------
    def _probation_tick(self) -> None:
        p = self.state.probation
        rt = self.models.runtime
        if not p or rt is None:
            return
        now = probation.figures(rt.serving.metrics)
        elapsed = time.monotonic() - self._probation_started
        v = probation.judge(now, probation.Figures.from_dict(p.get("baseline")), self.limits, elapsed)
        ev = {"update_id": p["update_id"], "version": p["version"], "name": p["name"], "figures": now.to_dict()}
        if v.state == "pass":
            self.models.commit(ModelRef(p["name"], p["version"]))
            self.state.probation = None
            self._end(p["update_id"], "committed", "update_committed", **ev, reason=v.reason)
            self.reporter.publish_status()
        elif v.state == "breach":
            self._roll_back(p, f"probation breach: {v.reason}", ev)
        elif v.state == "inconclusive":
            windows = int(elapsed // max(self.limits.window_s, 1e-9))
            if windows > self._inconclusive_reported:
                self._inconclusive_reported = windows
                self._set_progress(p["update_id"], p["version"], "probation", 100.0, detail=f"inconclusive: {v.reason}")
                log.warning("update %s: %s", p["update_id"], v.reason)
                self.reporter.publish_status()

    def _roll_back(self, p: dict[str, Any], reason: str, ev: dict[str, Any]) -> None:
        prev = p.get("previous")
        failed = ModelRef(p["name"], p["version"])
        if not prev:
            log.error("cannot roll back %s: no previous version", p["version"])
            return
        to = ModelRef(prev["name"], prev["version"])
        try:
            self.models.roll_back(to, failed=failed)
        except ModelLoadError as exc:
            self.reporter.event("update_failed", **ev, reason=f"rollback to {to.version} failed: {exc.reason}")
            return
        self.state.probation = None
        self._end(p["update_id"], "rolled_back", "update_rolled_back", **ev, to_version=to.version, reason=reason)
        self.reporter.publish_status()

    def _rollback_cmd(self, doc: Document) -> dict[str, Any]:
        store = self.models.store
        assert store is not None
        aside, self._set_aside = self._set_aside, None
        if aside is not None and aside.artifact is not None:  # an update in progress is abandoned
            self._end(aside.update_id, "failed", "update_failed", version=aside.artifact.version,
                      reason="cancelled by a rollback command")
        active = self.models.active
        p = self.state.probation
        if p:
            ev = {"update_id": p["update_id"], "version": p["version"], "name": p["name"]}
            self._roll_back(p, "rollback command", ev)
            return {"type": "rollback_done", "update_id": doc.update_id, "to_version":
                    self.models.active.version if self.models.active else None}
        prev = store.previous()
        if prev is None or active is None:
            return {"type": "update_failed", "update_id": doc.update_id,
                    "reason": "no previous committed version to roll back to"}
        try:
            self.models.roll_back(prev, failed=active)
        except ModelLoadError as exc:
            return {"type": "update_failed", "update_id": doc.update_id,
                    "reason": f"rollback to {prev.version} failed: {exc.reason}"}
        self.reporter.event("update_rolled_back", update_id=doc.update_id, version=active.version,
                            to_version=prev.version, reason="rollback command")
        self.reporter.publish_status()
        return {"type": "rollback_done", "update_id": doc.update_id, "to_version": prev.version}

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _set_current(self, doc: Document, state: str, percent: float | None = None, *, save: bool = True) -> None:
        art = doc.artifact
        assert art is not None
        with self.state.lock:
            self.state.current = {"id": doc.update_id, "type": doc.type, "target_key": doc.target_key,
                                  "name": art.name, "version": art.version, "state": state, "signed": doc.signed}
            if save:
                self.state.save()
        if save:
            crash_point(state)
        self._set_progress(doc.update_id, art.version, state, percent)

    def _set_progress(self, uid: str, version: str, state: str, percent: float | None, **extra: Any) -> None:
        before = self.progress
        self.progress = {"id": uid, "version": version, "state": state,
                         "percent": percent if percent is not None else (before or {}).get("percent", 0.0), **extra}
        if before is None or before.get("state") != state or (percent or 0) - (before.get("percent") or 0) >= 10:
            self.reporter.publish_status()

    def _end(self, uid: str, outcome: str, event: str | None, **data: Any) -> None:
        with self.state.lock:
            self.state.finish(uid, outcome)
            if self.state.current and self.state.current.get("id") == uid:
                self.state.current = None
            self.state.save()
        if self.progress and self.progress.get("id") == uid:
            self.progress = None
        if event is not None:
            data.setdefault("update_id", uid)
            self.reporter.event(event, **data)
        self.reporter.publish_status()


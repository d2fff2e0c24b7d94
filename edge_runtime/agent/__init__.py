"""The device agent: serves the active model and reports over MQTT through the durable outbox.

    agent = Agent(load_config("device_configs/raspberry-pi-4.toml"))
    agent.start()
    agent.event("drift_alert", feature="tenure", score=0.31)   # queued durably, then published
    agent.run_until_signal()                                   # SIGTERM/SIGINT: clean stop

Parts with one job each, wired together here: ``ModelManager`` (store, active version, the
Runtime), ``Updater`` (signed desired state -> download -> verify -> activate -> probation ->
commit or roll back), ``Reporter`` (status, metrics, events, the state file) and
``CommandIntake`` (commands from the ``cmd`` topics, deduplicated on disk, dispatched one at a
time through ``Agent.commands``). The local HTTP API, when ``[http]`` is configured, is the same
background server ``edge-runtime serve`` uses.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_runtime.agent import systemd
from edge_runtime.agent.commands import CommandHandler, CommandIntake, ping
from edge_runtime.agent.models import ModelManager
from edge_runtime.agent.reporter import OUTBOX_FILE, STATE_FILE, Reporter
from edge_runtime.agent.updater import Updater
from edge_runtime.config import Config
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.http import BackgroundServer
from edge_runtime.pipelines import Pipelines
from edge_runtime.runtime import Runtime
from edge_runtime.sync.mqtt import MqttLink
from edge_runtime.sync.outbox import Outbox
from edge_runtime.sync.publisher import Publisher
from edge_runtime.sync.topics import Topics
from edge_runtime.updates.transfer import artifact_id_of
from edge_runtime.updates.trust import KeyRing

__all__ = ["OUTBOX_FILE", "STATE_FILE", "Agent", "CommandHandler", "rss_mb"]

log = logging.getLogger(__name__)
STOP_BUDGET_S = 15.0  # the whole clean stop, flush included


def rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _version() -> str:
    from edge_runtime.version import __version__

    return __version__


class Agent:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.version = _version()
        self.started_at = time.time()
        self.topics = Topics(cfg.device.fleet, cfg.device.id, tuple(cfg.device.groups))
        u = cfg.updates
        try:
            self.keys = KeyRing.from_paths(both=u.public_keys, artifact=u.artifact_keys,
                                           deployment=u.deployment_keys)
        except ConfigError as exc:  # say which config line names the bad key file
            raise ConfigError(f"{exc.reason}; fix the path or the file", file=cfg.file, key="updates") from exc
        self.models = ModelManager(cfg, self.keys)
        self.reporter = Reporter(cfg, self.topics, version=self.version, started_at=self.started_at,
                                 models=self.models.models)
        self.updater = Updater(cfg, self.topics, self.models, self.reporter, self.keys)  # applies a rotated key set
        self.reporter.update_status = self.updater.status
        self.intake = CommandIntake(self.reporter, {"ping": ping(self.started_at), "update": self.updater.cmd_update,
                                                    "rollback": self.updater.cmd_rollback,
                                                    "keys": self.updater.cmd_keys})
        self.http: BackgroundServer | None = None
        self.pipelines: Pipelines | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._beat = 0.0  # when the timer loop last went round

    # -- the parts, as callers and tests reach them -------------------------------------------------
    @property
    def commands(self) -> dict[str, CommandHandler]:
        """Command name -> handler; add to it before ``start``."""
        return self.intake.handlers

    @property
    def runtime(self) -> Runtime | None:
        return self.models.runtime

    @property
    def outbox(self) -> Outbox | None:
        return self.reporter.outbox

    @property
    def link(self) -> MqttLink | None:
        return self.reporter.link

    @property
    def publisher(self) -> Publisher | None:
        return self.reporter.publisher

    @property
    def store_errors(self) -> int:
        return self.reporter.store_errors

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._check_data_dir()
        runtime = self.models.start(prefer=self.updater.before_load())
        runtime.subscribe(self._on_runtime_event)
        self.intake.start()
        self.reporter.open(self._route)
        self._start_http(runtime)
        self._start_experiment(runtime)
        if self.cfg.pipelines:
            self.pipelines = Pipelines(self.cfg, runtime, self.event)
            runtime.add_section("pipelines", self.pipelines.snapshot, self.pipelines)
            self.pipelines.start()
        active = self.models.active
        self.event("agent_started", model=active.name if active else None,
                   model_version=active.version if active else None, pid=os.getpid())
        self.updater.start()
        self._beat = time.monotonic()
        self._timer = threading.Thread(target=self._timers, name="agent-timers", daemon=True)
        self._timer.start()
        self.reporter.write_state(force=True)
        # serving now (its model loaded and smoke-tested, or its fallback); the broker may come later
        systemd.notify(f"READY=1\nSTATUS=serving {active.name if active else 'no model'} "
                       f"version {active.version if active else '-'}")

    def _check_data_dir(self) -> None:
        """The one start-up failure that is the machine's, not the config's: say which path and how."""
        d = self.cfg.device.data_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"{d} cannot be used as the data dir ({exc.strerror or exc}): create it and give the "
                              "agent's user write access, or point [device] data_dir elsewhere",
                              file=self.cfg.file, key="device.data_dir") from exc

    def stop(self, budget_s: float = STOP_BUDGET_S) -> None:
        """Clean stop: report it, flush what the broker takes in time, mark offline, close. Every
        part waits out of one budget (well inside systemd's TimeoutStopSec = 30), not each its own."""
        if self._stop.is_set():
            return
        end = time.monotonic() + budget_s

        def left(cap: float) -> float:
            return max(0.1, min(cap, end - time.monotonic()))

        if self._timer is not None:  # start() completed
            self.event("agent_stopping", uptime_s=round(time.time() - self.started_at, 3))
        self._stop.set()
        if self._timer is not None:
            self._timer.join(left(2))
        if self.pipelines is not None:
            self.pipelines.stop(left(3))
        self.intake.stop(left(5))
        self.updater.stop(left(5))
        if self.http is not None:
            try:
                self.http.stop()
            except Exception:
                log.exception("stopping the HTTP server failed")
        self.reporter.close(flush_s=max(0.0, end - time.monotonic() - 2.0))
        self.models.close()

    @staticmethod
    def install_signal_handlers() -> threading.Event:
        """SIGTERM/SIGINT set the returned event (main thread only). Install before ``start``
        so a signal during start-up still ends in a clean stop."""
        done = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            done.set()

        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, handler)
        return done

    def run_until_signal(self, done: threading.Event | None = None) -> None:
        """Block until SIGTERM or SIGINT (or ``done``), then stop cleanly. Under systemd, ping
        its watchdog from here while the agent's own loop is alive (a hung agent stops pinging
        and is restarted), and say STOPPING=1 first."""
        done = done or self.install_signal_handlers()
        interval = systemd.watchdog_interval()
        step = min(0.5, interval) if interval else 0.5
        try:
            while not done.wait(step):
                if interval and self.healthy(stale_after=max(4 * interval, 5.0)):
                    systemd.notify("WATCHDOG=1")
        finally:
            systemd.notify("STOPPING=1")
            self.stop()

    def healthy(self, stale_after: float) -> bool:
        """The agent's timer loop went round recently (it is not hung)."""
        return self._timer is not None and self._timer.is_alive() and time.monotonic() - self._beat < stale_after

    def _route(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        """paho's network thread: artifact chunks and desired states to the updater, the rest
        (commands) to the intake, which acknowledges them once handled."""
        aid = artifact_id_of(topic)
        if aid is not None:
            self.updater.on_artifact(topic.rsplit("/", 1)[1], aid, payload)
            ack()
        elif topic.endswith("/desired"):
            self.updater.on_desired(topic, payload)  # retained: delivered again on the next connect
            ack()
        elif topic == self.topics.keys:
            self.updater.on_keys(payload)
            ack()
        else:
            self.intake.on_message(topic, payload, ack)

    # -- reporting ----------------------------------------------------------------------------
    def event(self, type: str, **data: Any) -> str | None:
        """Queue an event durably (outbox) and wake the publisher; return its id."""
        return self.reporter.event(type, **data)

    def metrics_snapshot(self) -> dict[str, Any]:
        rt: dict[str, Any] = dict(self.runtime.metrics()) if self.runtime is not None else {}
        counts = rt.get("predictions") or {}
        total = sum(v for v in counts.values() if isinstance(v, (int, float)))
        if total:
            rt.setdefault("rates", {
                "error": round(counts.get("error", 0) / total, 6),
                "fallback": round(counts.get("fallback", 0) / total, 6),
                "cache": round(counts.get("cache", 0) / total, 6)})
        pipelines = rt.pop("pipelines", None)
        snap: dict[str, Any] = {"runtime": rt, "agent": {"uptime_s": round(time.time() - self.started_at, 3),
                                                         "rss_mb": rss_mb(), "version": self.version}}
        if pipelines is not None:
            snap["pipelines"] = pipelines
        if self.runtime is not None:
            snap["health"] = self.runtime.health()
        snap.update(self.reporter.transport_stats())
        return snap

    def publish_metrics(self) -> str | None:
        return self.reporter.publish_metrics(self.metrics_snapshot())

    def publish_status(self) -> None:
        self.reporter.publish_status()

    def _timers(self) -> None:
        m = self.cfg.mqtt
        next_metrics = time.monotonic() + (m.metrics_interval_s if m else 3600)
        next_beat = time.monotonic() + (m.heartbeat_interval_s if m else 3600)
        while not self._stop.wait(min(0.5, (m.metrics_interval_s / 2) if m else 0.5)):
            now = time.monotonic()
            self._beat = now
            try:
                if m is not None and now >= next_metrics:
                    next_metrics = max(next_metrics + m.metrics_interval_s, now)
                    self.publish_metrics()
                if m is not None and now >= next_beat:
                    next_beat = max(next_beat + m.heartbeat_interval_s, now)
                    self.publish_status()
                self.reporter.write_state()
            except Exception:
                log.exception("agent timer failed")

    def _on_runtime_event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.event(kind, **data)
        except Exception:
            log.exception("could not queue runtime event %s", kind)

    def _start_experiment(self, runtime: Runtime) -> None:
        """[experiment]: the candidate must verify like any artifact; if it cannot be used the
        device serves its model alone and says why (an experiment never takes a device down)."""
        ex = self.cfg.experiment
        if ex is None or ex.candidate is None:
            return
        try:
            if self.keys.artifact:
                self.keys.verify_artifact(ex.candidate)
            runtime.start_experiment(ex.candidate, mode=ex.mode, weight=ex.weight, key=ex.key,
                                     shadow_sample=ex.shadow_sample)
        except EdgeRuntimeError as exc:
            log.error("experiment not started: %s", exc)
            self.event("experiment_failed", candidate=str(ex.candidate), reason=str(exc)[:300])
            return
        cand = runtime.experiment.candidate if runtime.experiment else None
        self.event("experiment_started", mode=ex.mode, weight=ex.weight, key=ex.key, shadow_sample=ex.shadow_sample,
                   candidate={"name": cand.name, "version": cand.version} if cand else None)

    # -- local HTTP API -------------------------------------------------------------------------
    def _start_http(self, runtime: Runtime) -> None:
        h = self.cfg.http
        if h is None:
            return
        try:
            import uvicorn  # noqa: F401  (the [http] extra)
        except ImportError as exc:
            raise ConfigError(f"[http] is configured but the HTTP API needs the [http] extra ({exc.name} is not "
                              "installed): pip install 'edge-runtime[http]', or remove the [http] section",
                              file=self.cfg.file, key="http") from exc
        try:
            self.http = BackgroundServer(runtime, h.host, h.port).start()
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=self.cfg.file, key="http.port") from exc
        self.reporter.http_address = f"{h.host}:{self.http.port}"
        log.info("local HTTP API on %s", self.http.url)

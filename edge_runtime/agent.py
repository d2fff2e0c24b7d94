"""The device agent: serves the active model and reports over MQTT through the durable outbox.

    agent = Agent(load_config("device_configs/pi4.toml"))
    agent.start()
    agent.event("drift_alert", feature="tenure", score=0.31)   # queued durably, then published
    agent.run_until_signal()                                   # SIGTERM/SIGINT: clean stop

``status`` (retained) is published directly: it is current state, and the broker's Last Will
replaces it with "offline" when the device vanishes. ``metrics`` and ``events`` go through the
outbox, so none is lost while the broker is away or the device restarts. Commands arrive on
the device's, its groups' and the fleet's ``cmd`` topics and are dispatched through
``Agent.commands`` (name -> handler), one at a time on a worker thread.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge_runtime.config import Config
from edge_runtime.store import ModelStore, write_atomic
from edge_runtime.sync.outbox import Outbox, new_id
from edge_runtime.sync.topics import Topics

log = logging.getLogger(__name__)

STATE_FILE = "agent-state.json"
OUTBOX_FILE = "outbox.db"
CommandHandler = Callable[[dict[str, Any]], dict[str, Any] | None]


def rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


class Agent:
    def __init__(self, cfg: Config) -> None:
        from edge_runtime import __version__

        self.cfg = cfg
        self.version = __version__
        self.data_dir = Path(cfg.device.data_dir)
        self.topics = Topics(cfg.device.fleet, cfg.device.id, tuple(cfg.device.groups))
        self.runtime: Any = None
        self.outbox: Outbox | None = None
        self.link: Any = None
        self.publisher: Any = None
        self.http: Any = None
        self.started_at = time.time()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._commands_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-cmd")
        self._seen_cmds: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._state_lock = threading.Lock()
        self._last_state_write = 0.0
        self.commands: dict[str, CommandHandler] = {"ping": self._cmd_ping}
        self._reported_drops = {"metrics": 0, "events": 0}
        self.store_errors = 0  # messages that could not be written to the outbox (disk full, I/O error)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        import edge_runtime

        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = ModelStore(self.data_dir)
        ref = store.ensure(self.cfg.model.artifact)
        self.model_ref = ref
        self.store = store
        for old in store.prune(self.cfg.updates.keep_versions):
            log.info("pruned %s version %s (keep_versions = %d)", old.name, old.version, self.cfg.updates.keep_versions)
        self.runtime = edge_runtime.load(store.path(ref), **self.cfg.runtime_options())
        subscribe = getattr(self.runtime, "subscribe", None)
        if callable(subscribe):
            subscribe(self._on_runtime_event)
        m = self.cfg.mqtt
        if m is not None:
            from edge_runtime.sync.mqtt import MqttLink, json_bytes
            from edge_runtime.sync.publisher import Publisher

            self.outbox = Outbox(self.data_dir / OUTBOX_FILE, max_bytes=int(m.outbox_max_mb * 2**20),
                                 events_max_bytes=int(m.events_limit_mb * 2**20), policy=m.outbox_policy,
                                 sync=m.outbox_sync)
            self._reported_drops = self.outbox.dropped()
            self.link = MqttLink(m, client_id=self.cfg.client_id, will_topic=self.topics.status,
                                 will_payload=json_bytes(self._status("offline", reason="connection lost")),
                                 on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                                 on_publish=self._on_publish, on_message=self._on_message)
            self.publisher = Publisher(self.outbox, self.link, self.topics, window=m.inflight)
            self.publisher.start()
            self.link.start()
        else:
            log.warning("no [mqtt] section in %s: serving only, nothing is reported", self.cfg.file)
        self._start_http()
        self.event("agent_started", model=ref.name, model_version=ref.version, pid=os.getpid())
        self._timer = threading.Thread(target=self._timers, name="agent-timers", daemon=True)
        self._timer.start()
        self._write_state(force=True)

    def stop(self) -> None:
        """Clean stop: report it, flush what the broker takes in time, mark offline, close."""
        if self._stop.is_set():
            return
        if self._timer is not None:  # start() completed
            self.event("agent_stopping", uptime_s=round(time.time() - self.started_at, 3))
        self._stop.set()
        if self._timer is not None:
            self._timer.join(2)
        self._commands_pool.shutdown(wait=False, cancel_futures=True)
        if self.http is not None:
            try:
                self.http.stop()
            except Exception:
                log.exception("stopping the HTTP server failed")
        if self.publisher is not None and self.link is not None and self.cfg.mqtt is not None:
            from edge_runtime.sync.mqtt import json_bytes

            flushed = self.publisher.flush(self.cfg.mqtt.shutdown_flush_s)
            if not flushed:
                log.warning("stopping with %d message(s) still in the outbox; they are sent on the next start",
                            self.outbox.depth() if self.outbox else -1)
            self.publisher.stop()
            self.link.stop(final_topic=self.topics.status,
                           final_payload=json_bytes(self._status("offline", reason="stopped")))
        self._write_state(force=True, state="stopped")
        if self.outbox is not None:
            self.outbox.close()
        if self.runtime is not None:
            self.runtime.close()

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
        """Block until SIGTERM or SIGINT (or ``done``), then stop cleanly."""
        done = done or self.install_signal_handlers()
        try:
            while not done.wait(0.5):
                pass
        finally:
            self.stop()

    # -- reporting ----------------------------------------------------------------------------
    def _envelope(self, **body: Any) -> dict[str, Any]:
        return {"id": new_id(), "device": self.cfg.device.id, "fleet": self.cfg.device.fleet,
                "ts": round(time.time(), 6), **body}

    def event(self, type: str, **data: Any) -> str | None:
        """Queue an event durably (outbox) and wake the publisher; return its id."""
        if self.outbox is None or self.outbox.closed:
            log.info("event %s %s (not reported: %s)", type, data, "no [mqtt]" if self.outbox is None else "stopped")
            return None
        from edge_runtime.sync.mqtt import json_bytes

        doc = self._envelope(type=type, **data)
        mid = self._put("events", json_bytes(doc), "event", doc["id"])
        if self.publisher is not None:
            self.publisher.notify()
        return mid

    def metrics_snapshot(self) -> dict[str, Any]:
        rt: dict[str, Any] = dict(self.runtime.metrics()) if self.runtime is not None else {}
        counts = rt.get("predictions") or {}
        total = sum(v for v in counts.values() if isinstance(v, (int, float)))
        if total:
            rt.setdefault("rates", {
                "error": round(counts.get("error", 0) / total, 6),
                "fallback": round(counts.get("fallback", 0) / total, 6),
                "cache": round(counts.get("cache", 0) / total, 6)})
        snap: dict[str, Any] = {"runtime": rt, "agent": {"uptime_s": round(time.time() - self.started_at, 3),
                                                         "rss_mb": rss_mb(), "version": self.version}}
        if self.runtime is not None:
            snap["health"] = self.runtime.health()
        if self.outbox is not None:
            snap["outbox"] = {**self.outbox.stats(), "store_errors": self.store_errors}
        if self.publisher is not None:
            snap["mqtt"] = {**self.publisher.stats(), "connects": self.link.state.connects}
        return snap

    def publish_metrics(self) -> str | None:
        if self.outbox is None:
            return None
        from edge_runtime.sync.mqtt import json_bytes

        doc = self._envelope(**self.metrics_snapshot())
        mid = self._put("metrics", json_bytes(doc), "metrics", doc["id"])
        if self.publisher is not None:
            self.publisher.notify()
        self._report_drops()
        return mid

    def _put(self, topic: str, payload: bytes, kind: str, msg_id: str) -> str | None:
        """Queue durably; a full or failing disk is logged and counted, never raised at the caller."""
        assert self.outbox is not None
        try:
            return self.outbox.put(topic, payload, kind=kind, msg_id=msg_id)
        except sqlite3.Error as exc:
            self.store_errors += 1
            log.error("cannot queue a %s message in %s: %s", kind, self.outbox.path, exc)
            return None

    def _report_drops(self) -> None:
        """Drops are in every metrics snapshot; a new event drop is also reported as an event."""
        if self.outbox is None:
            return
        now = self.outbox.dropped()
        if now["events"] > self._reported_drops["events"]:
            self.event("outbox_overflow", dropped_events=now["events"] - self._reported_drops["events"],
                       dropped_metrics=now["metrics"] - self._reported_drops["metrics"], totals=now)
        self._reported_drops = now

    def _status(self, state: str, **extra: Any) -> dict[str, Any]:
        ref = getattr(self, "model_ref", None)
        models = [{"name": ref.name, "version": ref.version}] if ref else []
        return {"state": state, "device": self.cfg.device.id, "fleet": self.cfg.device.fleet,
                "groups": list(self.cfg.device.groups), "models": models, "runtime_version": self.version,
                "ts": round(time.time(), 6), **extra}

    def publish_status(self) -> None:
        if self.link is not None and self.link.connected:
            from edge_runtime.sync.mqtt import json_bytes

            up = round(time.time() - self.started_at, 3)
            depth = self.outbox.depth() if self.outbox else 0
            self.link.publish(self.topics.status, json_bytes(self._status("online", uptime_s=up, outbox_depth=depth)),
                              qos=1, retain=True)

    def _timers(self) -> None:
        m = self.cfg.mqtt
        next_metrics = time.monotonic() + (m.metrics_interval_s if m else 3600)
        next_beat = time.monotonic() + (m.heartbeat_interval_s if m else 3600)
        while not self._stop.wait(min(0.5, (m.metrics_interval_s / 2) if m else 0.5)):
            now = time.monotonic()
            try:
                if m is not None and now >= next_metrics:
                    next_metrics = max(next_metrics + m.metrics_interval_s, now)
                    self.publish_metrics()
                if m is not None and now >= next_beat:
                    next_beat = max(next_beat + m.heartbeat_interval_s, now)
                    self.publish_status()
                self._write_state()
            except Exception:
                log.exception("agent timer failed")

    # -- state file for `edge-runtime status` ---------------------------------------------------
    def _write_state(self, *, force: bool = False, state: str | None = None) -> None:
        now = time.time()
        if not force and now - self._last_state_write < 1.0:
            return
        with self._state_lock:
            self._last_state_write = now
            link = self.link.state if self.link is not None else None
            doc = {
                "pid": os.getpid(), "updated_at": now, "started_at": self.started_at,
                "state": state or ("connected" if link and link.connected else
                                   ("disconnected" if link else "no-mqtt")),
                "since": link.since if link else None,
                "broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}" if self.cfg.mqtt else None,
                "last_publish_at": self.publisher.last_ack_at if self.publisher else None,
                "last_error": (self.publisher.last_error if self.publisher and self.publisher.last_error
                               else (link.last_error if link else None)),
                "last_error_at": link.last_error_at if link else None,
                "device": self.cfg.device.id, "fleet": self.cfg.device.fleet,
                "model": getattr(self, "model_ref", None) and self.model_ref.to_dict(),
                "http": f"{self.cfg.http.host}:{self.http.port}" if self.http is not None and self.cfg.http else None,
            }
            write_atomic(self.data_dir / STATE_FILE, json.dumps(doc, indent=1).encode())

    # -- MQTT callbacks (paho's network thread: keep short) ------------------------------------
    def _on_connect(self) -> None:
        self.link.subscribe(self.topics.cmd_topics())
        self.publish_status()
        self.publisher.on_connect()
        threading.Thread(target=self._write_state, kwargs={"force": True}, daemon=True).start()

    def _on_disconnect(self) -> None:
        self.publisher.on_disconnect()
        threading.Thread(target=self._write_state, kwargs={"force": True}, daemon=True).start()

    def _on_publish(self, mid: int, ok: bool, reason: str) -> None:
        self.publisher.on_publish(mid, ok, reason)

    def _on_runtime_event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.event(kind, **data)
        except Exception:
            log.exception("could not queue runtime event %s", kind)

    # -- commands -------------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            cmd = json.loads(payload)
            if not isinstance(cmd, dict):
                raise ValueError("a command must be a JSON object")
            name = cmd.get("cmd") or cmd.get("type")
            if not isinstance(name, str):
                raise ValueError("a command needs a string 'cmd' field")
        except ValueError as exc:
            self.event("cmd_rejected", topic=topic, reason=f"unreadable command: {exc}")
            return
        cid = cmd.get("id")
        if isinstance(cid, str):  # QoS 1 can deliver twice; act once
            if cid in self._seen_cmds:
                return
            self._seen_cmds[cid] = None
            while len(self._seen_cmds) > 256:
                self._seen_cmds.popitem(last=False)
        self._commands_pool.submit(self._dispatch, topic, name, cmd)

    def _dispatch(self, topic: str, name: str, cmd: dict[str, Any]) -> None:
        handler = self.commands.get(name)
        ref = {"cmd": name, "cmd_id": cmd.get("id"), "topic": topic}
        if handler is None:
            known = ", ".join(sorted(self.commands))
            self.event("cmd_rejected", **ref, reason=f"unknown command {name!r}; known: {known}")
            return
        try:
            result = handler(cmd)
        except Exception as exc:
            log.exception("command %s failed", name)
            self.event("cmd_failed", **ref, reason=str(exc))
            return
        if result is not None:
            self.event(result.pop("type", f"{name}_done"), **ref, **result)

    def _cmd_ping(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pong", "echo": cmd.get("data"), "uptime_s": round(time.time() - self.started_at, 3)}

    # -- local HTTP API -------------------------------------------------------------------------
    def _start_http(self) -> None:
        if self.cfg.http is None:
            return
        from edge_runtime.errors import ConfigError

        try:
            import uvicorn

            from edge_runtime.http.app import create_app
        except ImportError as exc:
            raise ConfigError(f"[http] is configured but the HTTP API needs the [http] extra ({exc.name} is not "
                              "installed): pip install 'edge-runtime[http]', or remove the [http] section",
                              file=self.cfg.file, key="http") from exc
        server = uvicorn.Server(uvicorn.Config(create_app(self.runtime), host=self.cfg.http.host,
                                               port=self.cfg.http.port, log_level="warning", access_log=False))
        t = threading.Thread(target=server.run, name="agent-http", daemon=True)
        t.start()
        end = time.monotonic() + 10
        while not server.started and t.is_alive() and time.monotonic() < end:
            time.sleep(0.01)
        if not server.started:
            raise ConfigError(f"the local HTTP API could not listen on {self.cfg.http.host}:{self.cfg.http.port} "
                              "(port in use?)", file=self.cfg.file, key="http.port")
        self.http = _HttpThread(server, t)
        log.info("local HTTP API on http://%s:%d", self.cfg.http.host, self.http.port)


class _HttpThread:
    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread

    @property
    def port(self) -> int:
        for s in self.server.servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return 0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

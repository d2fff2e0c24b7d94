"""The agent's reporting: status (retained), metrics and events through the durable outbox.

``status`` is published directly: it is current state, and the broker's Last Will replaces it
with "offline" when the device vanishes. ``metrics`` and ``events`` go through the outbox, so
none is lost while the broker is away or the device restarts. The state file read by
``edge-runtime status`` is written here too.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.config import Config
from edge_runtime.store import write_atomic
from edge_runtime.sync.mqtt import MqttLink, json_bytes
from edge_runtime.sync.outbox import Outbox, new_id
from edge_runtime.sync.publisher import Publisher
from edge_runtime.sync.topics import Topics

log = logging.getLogger(__name__)

STATE_FILE = "agent-state.json"
OUTBOX_FILE = "outbox.db"
MessageHandler = Callable[[str, bytes, Callable[[], None]], None]


class Reporter:
    """Everything the device says: status, metrics and events, and the local state file."""

    def __init__(self, cfg: Config, topics: Topics, *, version: str, started_at: float,
                 models: Callable[[], list[dict[str, str]]],
                 update_status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.topics = topics
        self.version = version
        self.started_at = started_at
        self.data_dir = Path(cfg.device.data_dir)
        self._models = models
        self.update_status = update_status  # active, previous, the update in hand (set by the agent)
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.publisher: Publisher | None = None
        self.http_address: str | None = None
        self.store_errors = 0  # messages that could not be written to the outbox (disk full, I/O error)
        self._reported_store_errors = 0
        self._store_error = ""
        self._reported_drops = {"metrics": 0, "events": 0}
        self._state_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._last_state_write = 0.0

    # -- connection -----------------------------------------------------------------------------
    def open(self, on_message: MessageHandler) -> None:
        """Open the outbox and connect (in the background); commands go to ``on_message``."""
        m = self.cfg.mqtt
        if m is None:
            log.warning("no [mqtt] section in %s: serving only, nothing is reported", self.cfg.file)
            return
        self.outbox = Outbox(self.data_dir / OUTBOX_FILE, max_bytes=int(m.outbox_max_mb * 2**20),
                             events_max_bytes=int(m.events_limit_mb * 2**20), policy=m.outbox_policy,
                             sync=m.outbox_sync)
        self._reported_drops = self.outbox.dropped()
        if self.outbox.recovered:  # a damaged outbox was replaced at start: say what was kept and lost
            self.event("outbox_recovered", **self.outbox.recovered)
        self.link = MqttLink(m, client_id=self.cfg.client_id, will_topic=self.topics.status,
                             will_payload=json_bytes(self.status_doc("offline", reason="connection lost")),
                             on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                             on_publish=self._on_publish, on_message=on_message)
        self.publisher = Publisher(self.outbox, self.link, self.topics, window=m.inflight)
        self.publisher.start()
        self.link.start()

    def close(self, flush_s: float | None = None) -> None:
        """Flush what the broker takes in time (``shutdown_flush_s``, at most ``flush_s``), publish
        the clean "offline" status, close the outbox."""
        if self.publisher is not None and self.link is not None and self.cfg.mqtt is not None:
            wait = self.cfg.mqtt.shutdown_flush_s if flush_s is None else min(flush_s, self.cfg.mqtt.shutdown_flush_s)
            if not self.publisher.flush(wait):
                log.warning("stopping with %d message(s) still in the outbox; they are sent on the next start",
                            self.outbox.depth() if self.outbox else -1)
            self.publisher.stop()
            self.link.stop(final_topic=self.topics.status,
                           final_payload=json_bytes(self.status_doc("offline", reason="stopped")))
        self.write_state(force=True, state="stopped")
        if self.outbox is not None:
            self.outbox.close()

    # -- events and metrics ---------------------------------------------------------------------
    def envelope(self, **body: Any) -> dict[str, Any]:
        return {"id": new_id(), "device": self.cfg.device.id, "fleet": self.cfg.device.fleet,
                "ts": round(time.time(), 6), **body}

    def event(self, type: str, *, handled_command: str | None = None, **data: Any) -> str | None:
        """Queue an event durably (outbox) and wake the publisher; return its id. With
        ``handled_command``, that command id is recorded as handled in the same transaction."""
        if self.outbox is None or self.outbox.closed:
            log.info("event %s %s (not reported: %s)", type, data, "no [mqtt]" if self.outbox is None else "stopped")
            return None
        doc = self.envelope(type=type, **data)
        mid = self._put("events", json_bytes(doc), "event", doc["id"], handled_command)
        if self.publisher is not None:
            self.publisher.notify()
        return mid

    def publish_metrics(self, snapshot: dict[str, Any]) -> str | None:
        if self.outbox is None:
            return None
        doc = self.envelope(**snapshot)
        mid = self._put("metrics", json_bytes(doc), "metrics", doc["id"])
        if self.publisher is not None:
            self.publisher.notify()
        self._report_drops()
        return mid

    def transport_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.outbox is not None:
            out["outbox"] = {**self.outbox.stats(), "store_errors": self.store_errors}
        if self.publisher is not None and self.link is not None:
            out["mqtt"] = {**self.publisher.stats(), "connects": self.link.state.connects}
        return out

    def _put(self, topic: str, payload: bytes, kind: str, msg_id: str,
             handled_command: str | None = None) -> str | None:
        """Queue durably; a full or failing disk is logged and counted, never raised at the caller."""
        assert self.outbox is not None
        try:
            return self.outbox.put_many([(topic, payload, kind, msg_id, None)], handled_command=handled_command)[0]
        except (sqlite3.Error, RuntimeError) as exc:
            self.store_errors += 1
            self._store_error = str(exc)
            n = self.store_errors - self._reported_store_errors
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... while it lasts: a full disk logs a little
                log.error("cannot queue a %s message in %s: %s (%d lost so far)", kind, self.outbox.path, exc, n)
            return None

    def start_problems(self, problems: list[dict[str, Any]], active: Any) -> None:
        """What the model manager had to work around at start: each a ``model_error``, each repair
        a ``model_rebuilt``, and a start on another version than the active one a rollback."""
        for prob in problems:
            self.event("model_error", reason=prob["reason"][:500], version=prob.get("version"))
            if prob.get("repair"):
                self.event("model_rebuilt", version=prob.get("version"), reason=prob["repair"][:500])
        first = next((p for p in problems if not p.get("repair")), None)
        if first is not None and active is not None and first.get("version") != active.version:
            self.event("update_rolled_back", version=first.get("version"), to_version=active.version,
                       update_id=f"start-{int(time.time())}",
                       reason="the active version could not be loaded at start: " + first["reason"][:300])

    def _report_drops(self) -> None:
        """Drops are in every metrics snapshot; a new event drop is also reported as an event, and
        so are the reports that could not be stored (a full disk) once storing works again."""
        if self.outbox is None:
            return
        lost = self.store_errors - self._reported_store_errors
        if lost:
            self._reported_store_errors = self.store_errors
            if self.event("reports_lost", count=lost, reason=self._store_error) is None:
                self._reported_store_errors -= lost  # not stored either: say it (and this one) next time
        now = self.outbox.dropped()
        if now["events"] > self._reported_drops["events"]:
            self.event("outbox_overflow", dropped_events=now["events"] - self._reported_drops["events"],
                       dropped_metrics=now["metrics"] - self._reported_drops["metrics"], totals=now)
        self._reported_drops = now

    # -- status -----------------------------------------------------------------------------------
    def status_doc(self, state: str, **extra: Any) -> dict[str, Any]:
        doc = {"state": state, "device": self.cfg.device.id, "fleet": self.cfg.device.fleet,
               "groups": list(self.cfg.device.groups), "models": self._models(), "runtime_version": self.version,
               "ts": round(time.time(), 6)}
        if self.update_status is not None:
            doc.update(self.update_status())
        return {**doc, **extra}

    def publish_status(self) -> None:
        if self.link is not None and self.link.connected:
            with self._status_lock:  # built and sent in one step: an older snapshot never lands last
                up = round(time.time() - self.started_at, 3)
                depth = self.outbox.depth() if self.outbox else 0
                self.link.publish(self.topics.status, json_bytes(self.status_doc("online", uptime_s=up,
                                                                                 outbox_depth=depth)),
                                  qos=1, retain=True)

    def write_state(self, *, force: bool = False, state: str | None = None) -> None:
        """The state file ``edge-runtime status`` reads (at most once a second unless forced)."""
        now = time.time()
        if not force and now - self._last_state_write < 1.0:
            return
        with self._state_lock:
            self._last_state_write = now
            link = self.link.state if self.link is not None else None
            models = self._models()
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
                "model": models[0] if models else None,
                "http": self.http_address,
            }
            try:
                write_atomic(self.data_dir / STATE_FILE, json.dumps(doc, indent=1).encode())
            except OSError as exc:  # a full or failing disk must not stop the agent (or its stop)
                self.store_errors += 1
                log.warning("cannot write %s: %s", self.data_dir / STATE_FILE, exc)

    # -- MQTT callbacks (paho's network thread: keep short) ------------------------------------
    def _on_connect(self) -> None:
        assert self.link is not None and self.publisher is not None
        self.link.subscribe(self.topics.cmd_topics() + self.topics.desired_topics() + [self.topics.keys])
        self.publish_status()
        self.publisher.on_connect()
        threading.Thread(target=self.write_state, kwargs={"force": True}, daemon=True).start()

    def _on_disconnect(self) -> None:
        assert self.publisher is not None
        self.publisher.on_disconnect()
        threading.Thread(target=self.write_state, kwargs={"force": True}, daemon=True).start()

    def _on_publish(self, mid: int, ok: bool, reason: str) -> None:
        assert self.publisher is not None
        self.publisher.on_publish(mid, ok, reason)

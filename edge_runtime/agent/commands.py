"""Command intake: read, deduplicate and dispatch commands from the ``cmd`` topics, one at a time.

Commands arrive on the device's, its groups' and the fleet's ``cmd`` topics. Each goes on a
bounded queue to one worker thread, which runs them in arrival order and acknowledges each
to the broker only once it is handled. A command's id is recorded as handled in the outbox
database in the same transaction as its result event, so:

- a command redelivered by the broker (QoS 1, or the persistent session after a restart) whose
  id was handled before is acknowledged and not run again;
- a command the agent crashed in the middle of was never acknowledged: the broker delivers
  it again after the restart, and it runs then.

A command that cannot be read (too large, not JSON, nested too deeply, no name) is refused
with a ``cmd_rejected`` event that quotes at most a few dozen characters of it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_runtime.agent.reporter import Reporter
from edge_runtime.errors import NAME_CHARS, echo

log = logging.getLogger(__name__)

CommandHandler = Callable[[dict[str, Any]], dict[str, Any] | None]
MAX_COMMAND_BYTES = 256 * 1024  # larger payloads are refused before parsing
MAX_QUEUED = 1000  # commands waiting for the worker; more are refused (and acknowledged)


def _short(value: object, n: int = NAME_CHARS) -> str:
    return echo(value if isinstance(value, str) else repr(value), n)


class CommandIntake:
    """Queue, deduplicate and dispatch commands to ``handlers`` (name -> handler)."""

    def __init__(self, reporter: Reporter, handlers: dict[str, CommandHandler] | None = None) -> None:
        self.reporter = reporter
        self.handlers: dict[str, CommandHandler] = dict(handlers or {})
        self._queue: queue.Queue[tuple[str, bytes, Callable[[], None]] | None] = queue.Queue(MAX_QUEUED)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.duplicates = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="agent-cmd", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the command in hand; commands still queued are left unacknowledged, so the
        broker delivers them again after the next start."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    # -- paho's network thread ---------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: redelivered on the next start
        try:
            self._queue.put_nowait((topic, payload, ack))
        except queue.Full:
            self.reporter.event("cmd_rejected", topic=topic, reason=f"command queue full ({MAX_QUEUED} waiting); "
                                "send fewer commands at once")
            ack()

    # -- worker thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopping.is_set():
                return
            topic, payload, ack = item
            answered = True
            try:
                answered = self._handle(topic, payload)
            except Exception:  # never lose the worker
                log.exception("command on %s failed unexpectedly", topic)
            if answered:
                ack()
            # else: stopping with the answer unstored (a full disk): unacknowledged, so the broker
            # delivers the command again after the restart

    def _answer(self, type: str, **data: Any) -> bool:
        """Queue a command's answer; while the disk is full (the outbox cannot store it), wait and
        try again rather than lose it — the answer is what the operator waits for. False: the
        agent stopped first."""
        delay = 0.5
        while True:
            before = self.reporter.store_errors
            self.reporter.event(type, **data)
            if self.reporter.store_errors == before:
                return True
            log.warning("cannot store the answer to command %s yet (disk full?); trying again in %.1f s",
                        data.get("cmd_id") or data.get("cmd"), delay)
            if self._stopping.wait(delay):
                return False
            delay = min(delay * 2, 30.0)

    def _handle(self, topic: str, payload: bytes) -> bool:
        try:
            cmd = parse(payload)
        except ValueError as exc:
            return self._answer("cmd_rejected", topic=topic, reason=f"unreadable command: {exc}")
        name = cmd.get("cmd") or cmd.get("type")
        cid = cmd.get("id")
        cid = cid if isinstance(cid, str) and 0 < len(cid) <= 200 else None
        ref = {"cmd": _short(name), "cmd_id": cid, "topic": topic}
        outbox = self.reporter.outbox
        if cid is not None and outbox is not None and outbox.command_handled(cid):
            self.duplicates += 1
            log.info("command %s (%s) was handled before; not running it again", cid, ref["cmd"])
            return True
        handler = self.handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return self._answer("cmd_rejected", handled_command=cid, **ref,
                                reason=f"unknown command {_short(name)!r}; known: {known}")
        try:
            result = handler(cmd)
        except Exception as exc:
            log.exception("command %s failed", name)
            return self._answer("cmd_failed", handled_command=cid, **ref, reason=_short(str(exc), 500))
        self.handled += 1
        if result is None:
            result = {}
        return self._answer(result.pop("type", f"{name}_done"), handled_command=cid, **ref, **result)


def parse(payload: bytes) -> dict[str, Any]:
    """A command object from a payload, or ValueError saying what is wrong with it."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise ValueError(f"{len(payload)} bytes is over the {MAX_COMMAND_BYTES}-byte limit for a command")
    try:
        cmd = json.loads(payload)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({_short(str(exc), 120)})") from None
    if not isinstance(cmd, dict):
        raise ValueError("a command must be a JSON object")
    name = cmd.get("cmd") or cmd.get("type")
    if not isinstance(name, str) or not name:
        raise ValueError("a command needs a string 'cmd' field")
    return cmd


def ping(started_at: float) -> CommandHandler:
    def handler(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pong", "echo": cmd.get("data"), "uptime_s": round(time.time() - started_at, 3)}

    return handler

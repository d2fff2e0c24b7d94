"""Drains the outbox to the broker: QoS 1, a bounded in-flight window, delete on PUBACK.

One thread owns the window. It publishes the oldest messages first; a message leaves the
outbox only when the broker's PUBACK for it arrives (paho's ``on_publish``). While the
link is down nothing new is sent; messages already handed to paho are re-sent by paho on
reconnect. After a process restart everything still in the outbox is sent again; receivers
drop duplicates by ``id``.

Draining a large backlog after an outage keeps new messages flowing: while the backlog
(everything queued before the reconnect) is being sent, a tenth of the window goes to
messages queued since, so a fresh metrics snapshot or alert does not wait behind hours of
history.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any

from edge_runtime.sync.mqtt import MqttLink
from edge_runtime.sync.outbox import Message, Outbox
from edge_runtime.sync.topics import Topics

log = logging.getLogger(__name__)

LIVE_SHARE = 0.1  # of the window, for new messages while a backlog drains
DELETE_BATCH = 256  # acknowledged messages deleted per transaction...
DELETE_EVERY_S = 0.05  # ...or at least this often


class Publisher:
    def __init__(self, outbox: Outbox, link: MqttLink, topics: Topics, *, window: int = 100) -> None:
        self.outbox = outbox
        self.link = link
        self.topics = topics
        self.window = max(1, window)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: collections.deque[tuple[int, bool, str]] = collections.deque()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq (owned by the publisher thread)
        self._cursor = 0  # every seq <= cursor has been handed to paho
        self._live_from: int | None = None  # backlog boundary while draining after a reconnect
        self._live_cursor = 0
        self._live_credit = 0.0
        self._reconnected = False
        self._put_counter = itertools.count(1)
        self._puts = 0  # last notify() number, so a put racing the idle check is never missed
        self._done: list[int] = []  # acknowledged seqs not yet deleted
        self._last_delete = time.monotonic()
        self._caught_up = True  # the last read returned everything there was
        self._thread: threading.Thread | None = None
        self.published = 0
        self.acked = 0
        self.rejected = 0
        self.last_ack_at: float | None = None
        self.last_error: str | None = None
        self.idle = threading.Event()  # set when the outbox is empty and nothing is in flight

    # -- called from other threads ------------------------------------------------------------
    def notify(self) -> None:
        """A message was put into the outbox."""
        self._puts = next(self._put_counter)  # atomic under the GIL, unlike += 1
        self.idle.clear()
        self._wake.set()

    def on_publish(self, mid: int, ok: bool, reason: str) -> None:
        """paho network thread: the broker acknowledged ``mid``."""
        self._acks.append((mid, ok, reason))
        self._wake.set()

    def on_connect(self) -> None:
        self._reconnected = True
        self._wake.set()

    def on_disconnect(self) -> None:
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout`` passes (False)."""
        self._wake.set()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.idle.wait(min(0.05, max(0.0, end - time.monotonic()))):
                return True
            if not self.link.connected:
                return False
        return self.idle.is_set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "acked": self.acked, "rejected": self.rejected,
                "inflight": len(self._inflight), "last_ack_at": self.last_ack_at}

    # -- the publisher thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(DELETE_EVERY_S if self._done else 0.5)
            self._wake.clear()
            puts = self._puts  # idle only if no put happened since this point
            try:
                self._process_acks()
                if self.link.connected:
                    self._fill()
                if self._done and (not self._inflight or len(self._done) >= DELETE_BATCH
                                   or time.monotonic() - self._last_delete >= DELETE_EVERY_S):
                    self._delete_acked()
                if not self._inflight and not self._done and self.outbox.depth() == 0 and puts == self._puts:
                    self.idle.set()
            except Exception as exc:  # keep draining whatever happens; the outbox keeps the data
                if self.outbox.closed:
                    return
                self.last_error = f"publisher: {exc}"
                log.exception("outbox publisher error")
                time.sleep(0.2)
        self._process_acks()
        if not self.outbox.closed:
            self._delete_acked()

    def _process_acks(self) -> None:
        while self._acks:
            mid, ok, reason = self._acks.popleft()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # a status or reply published directly, not from the outbox
            if ok:
                self._done.append(seq)
                self.last_ack_at = time.time()
            else:
                # Kept in the outbox (it is re-sent after the next agent start) but not retried
                # now: a refusal (ACL, quota) would repeat at once.
                self.rejected += 1
                self.last_error = f"broker refused message seq {seq}: {reason}"
                log.error("broker refused outbox message seq %d: %s", seq, reason)

    def _delete_acked(self) -> None:
        """Acknowledged messages leave the disk in batches: one transaction per batch, and a
        crash before it only means a duplicate later, which receivers drop by id."""
        done, self._done = self._done, []
        self._last_delete = time.monotonic()
        if done:
            self.acked += self.outbox.ack_seqs(done)

    def _fill(self) -> None:
        if self._reconnected:
            self._reconnected = False
            backlog = self.outbox.depth() - len(self._inflight)
            if backlog > 2 * self.window and self._live_from is None:
                self._live_from = self.outbox.last_seq()
                self._live_cursor = self._live_from
                log.info("draining a backlog of %d messages", backlog)
        while self.link.connected and not self._stop.is_set():
            room = self.window - len(self._inflight)
            if room <= 0 or (not self._caught_up and room < self.window // 4):
                return  # behind: refill in chunks, not one query per acknowledgement
            if self._live_from is not None:
                # a tenth of the slots, on average, for messages queued since the reconnect
                self._live_credit = min(self._live_credit + room * LIVE_SHARE, float(room))
                n_live = int(self._live_credit)
                n_old = room - n_live
                old = []
                if n_old > 0:
                    old = self.outbox.peek(n_old, after_seq=self._cursor, upto_seq=self._live_from)
                    if not old:  # backlog all handed over: one cursor again
                        self._cursor = max(self._cursor, self._live_cursor, self._live_from)
                        self._live_from = None
                        continue
                live = self.outbox.peek(n_live, after_seq=self._live_cursor) if n_live else []
                # credit is not saved up while nothing new waits
                self._live_credit = 0.0 if len(live) < n_live else self._live_credit - len(live)
                if not old and not live:
                    continue
            else:
                live, old = [], self.outbox.peek(room, after_seq=self._cursor)
            self._caught_up = self._live_from is None and len(old) < room
            if not old and not live:
                return
            for m in old:
                if not self._send(m):
                    return
                self._cursor = m.seq
            for m in live:
                if not self._send(m):
                    return
                self._live_cursor = m.seq
            self._process_acks()

    def _send(self, m: Message) -> bool:
        info = self.link.publish(self.topics.device_topic(m.topic), m.payload, qos=1)
        if info.mid in self._inflight:  # cannot happen with a window below 65535; be safe anyway
            log.error("MQTT message id %d reused while in flight", info.mid)
        self._inflight[info.mid] = m.seq
        self.published += 1
        return True

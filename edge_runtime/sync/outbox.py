"""The durable outbox: every metrics snapshot and event is written here before it is published.

SQLite in WAL mode, one row per message, deleted only when the broker has acknowledged it.
It survives broker outages and agent crashes; with ``sync="full"`` (the default) every event
is fsynced before ``put`` returns, so it survives power loss too. Metrics snapshots and deletes
are committed without an fsync (SQLite WAL, synchronous=NORMAL): a power cut can lose the last
snapshot (the next one supersedes it) or resurrect an acknowledged message (a duplicate that
receivers drop by ``id``), never corrupt the queue.

Size is bounded. With the ``drop-metrics-first`` policy, when a new message would take the
outbox past ``max_bytes`` the oldest metrics snapshots go first; events are kept past that
limit, up to ``events_max_bytes``, and only then are the oldest events dropped. With
``drop-oldest`` the oldest message of either kind goes. Every drop is counted in the database,
so the counts survive restarts and the agent reports them.

    ob = Outbox("data/outbox.db", max_bytes=64 << 20)
    ob.put("events", b'{"id": ...}', kind="event")
    for m in ob.peek(100): ...; ob.ack(m.id)
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("metrics", "event")
POLICIES = ("drop-metrics-first", "drop-oldest")
ROW_OVERHEAD = 64  # bytes counted per row on top of topic and payload (id, seq, index entries)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('metrics', 'event')),
    created_at REAL    NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind_seq ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS handled_commands (id TEXT PRIMARY KEY, handled_at REAL NOT NULL);
"""
HANDLED_KEPT = 10000  # command ids remembered (a redelivery comes within the broker's session expiry)


@dataclass(frozen=True)
class Message:
    seq: int
    id: str
    topic: str  # suffix under the device's topic: "metrics" or "events"
    payload: bytes
    kind: str
    created_at: float


def new_id() -> str:
    return uuid.uuid4().hex


class Outbox:
    """A bounded, durable, thread-safe FIFO of messages waiting for a broker acknowledgement."""

    def __init__(self, path: str | Path, *, max_bytes: int = 64 << 20, events_max_bytes: int | None = None,
                 policy: str = "drop-metrics-first", sync: str = "full") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown outbox policy {policy!r}; known: {', '.join(POLICIES)}")
        if sync not in ("full", "normal"):
            raise ValueError(f"outbox sync must be 'full' or 'normal', not {sync!r}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.events_max_bytes = int(events_max_bytes if events_max_bytes is not None else 2 * max_bytes)
        self.policy = policy
        self.sync = sync
        self._synchronous = ""
        self._lock = threading.RLock()  # writes (put, ack, drop) on self._db
        self._rlock = threading.Lock()  # reads on self._rdb: a put's fsync never stalls peek()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # what start had to do about a damaged file, for the agent to report:
        # {"moved_to", "reason", "salvaged", "lost"} (lost None when it could not be counted)
        self.recovered: dict[str, Any] | None = None
        self._bytes = self._count = 0
        self._dropped: dict[str, int] = {}
        self._db = self._open(sync)
        self._rdb = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.closed = False

    def _open(self, sync: str) -> sqlite3.Connection:
        try:
            db = self._connect(sync)
            try:
                self._reload_totals(db)  # reads every page's index: garbled data pages fail here
                db.execute("SELECT COUNT(*) FROM handled_commands").fetchone()
            except BaseException:
                db.close()
                raise
            return db
        except sqlite3.DatabaseError as exc:
            # A database that cannot be read would stop all reporting forever: save what can
            # still be read, keep the file for inspection, start a new one and say what was lost.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            rows, handled, total = _salvage(self.path)
            log.error("outbox %s is damaged (%s): salvaged %d message(s) of %s, moved it aside to %s",
                      self.path, exc, len(rows), total if total is not None else "an unknown number", aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.rename(Path(str(aside) + suffix))
            db = self._connect(sync)
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO outbox (seq, id, topic, payload, kind, created_at, size) "
                           "VALUES (?,?,?,?,?,?,?)", rows)
            db.executemany("INSERT OR IGNORE INTO handled_commands (id, handled_at) VALUES (?, ?)", handled)
            db.execute("COMMIT")
            self._reload_totals(db)
            self.recovered = {"moved_to": aside.name, "reason": str(exc)[:200], "salvaged": len(rows),
                              "lost": total - len(rows) if total is not None else None}
            return db

    def _connect(self, sync: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=4194304")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._synchronous = "NORMAL"
        return db

    def _set_sync(self, level: str) -> None:
        if level != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    # -- writing ------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, *, kind: str, msg_id: str | None = None,
            created_at: float | None = None) -> str | None:
        """Store one message durably; return its id, or None when the size policy dropped it."""
        ids = self.put_many([(topic, payload, kind, msg_id, created_at)])
        return ids[0]

    def put_many(self, items: Iterable[tuple[str, bytes, str, str | None, float | None]], *,
                 handled_command: str | None = None) -> list[str | None]:
        """Store several messages in one transaction (one fsync). With ``handled_command``, that
        command id is recorded as handled in the same transaction, so its result and the record
        that it ran survive (or vanish) together."""
        out: list[str | None] = []
        items = list(items)
        with self._lock:
            self._check_open()
            db = self._db
            durable = self.sync == "full" and (handled_command is not None or any(it[2] == "event" for it in items))
            self._set_sync("FULL" if durable else "NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                for topic, payload, kind, msg_id, created_at in items:
                    if kind not in KINDS:
                        raise ValueError(f"outbox kind must be one of {KINDS}, not {kind!r}")
                    size = len(payload) + len(topic) + ROW_OVERHEAD
                    if not self._make_room(kind, size):
                        out.append(None)
                        continue
                    mid = msg_id or new_id()
                    db.execute("INSERT INTO outbox (id, topic, payload, kind, created_at, size) VALUES (?,?,?,?,?,?)",
                               (mid, topic, payload, kind, time.time() if created_at is None else created_at, size))
                    self._bytes += size
                    self._count += 1
                    out.append(mid)
                if handled_command is not None:
                    db.execute("INSERT OR REPLACE INTO handled_commands (id, handled_at) VALUES (?, ?)",
                               (handled_command, time.time()))
                    db.execute("DELETE FROM handled_commands WHERE id IN (SELECT id FROM handled_commands "
                               "ORDER BY handled_at DESC LIMIT -1 OFFSET ?)", (HANDLED_KEPT,))
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                self._reload_totals()
                raise
        return out

    def _make_room(self, kind: str, size: int) -> bool:
        """Apply the size policy for a new message of ``size`` bytes; False: drop the new one."""
        if self._bytes + size <= self.max_bytes:
            return True
        if self.policy == "drop-oldest":
            self._drop_oldest(None, self._bytes + size - self.max_bytes)
            if self._bytes + size > self.max_bytes:  # a single message larger than the whole outbox
                self._count_drop(kind, 1)
                return False
            return True
        # drop-metrics-first: metrics make way for anything; events may use the second limit
        self._drop_oldest("metrics", self._bytes + size - self.max_bytes)
        if self._bytes + size <= self.max_bytes:
            return True
        if kind == "metrics":
            self._count_drop("metrics", 1)
            return False
        if self._bytes + size > self.events_max_bytes:
            self._drop_oldest("event", self._bytes + size - self.events_max_bytes)
        if self._bytes + size > self.events_max_bytes:
            self._count_drop("event", 1)
            return False
        return True

    def _drop_oldest(self, kind: str | None, need: int) -> None:
        db = self._db
        freed = 0
        while freed < need:
            where = "WHERE kind = ?" if kind else ""
            args: tuple[str, ...] = (kind,) if kind else ()
            rows = db.execute(f"SELECT seq, size, kind FROM outbox {where} ORDER BY seq LIMIT 256", args).fetchall()
            if not rows:
                return
            victims: list[int] = []
            by_kind: dict[str, int] = {}
            for seq, size, k in rows:
                victims.append(seq)
                by_kind[k] = by_kind.get(k, 0) + 1
                freed += size
                self._bytes -= size
                self._count -= 1
                if freed >= need:
                    break
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
            for k, n in by_kind.items():
                self._count_drop(k, n)

    def _count_drop(self, kind: str, n: int) -> None:
        name = f"dropped_{'events' if kind == 'event' else 'metrics'}"
        self._dropped[name] = self._dropped.get(name, 0) + n
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))
        if kind == "event":
            log.warning("outbox full: dropped %d event(s) (limit %d bytes)", n, self.events_max_bytes)

    # -- reading and acknowledging --------------------------------------------------------------
    def peek(self, n: int, *, after_seq: int = 0, upto_seq: int | None = None) -> list[Message]:
        """Up to ``n`` oldest messages with ``after_seq < seq <= upto_seq``."""
        with self._rlock:
            self._check_open()
            if upto_seq is None:
                rows = self._rdb.execute("SELECT seq, id, topic, payload, kind, created_at FROM outbox "
                                        "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, n)).fetchall()
            else:
                rows = self._rdb.execute("SELECT seq, id, topic, payload, kind, created_at FROM outbox "
                                        "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                                        (after_seq, upto_seq, n)).fetchall()
        return [Message(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def ack(self, msg_id: str) -> bool:
        """Delete a message the broker has acknowledged; False if it was already gone."""
        with self._lock:
            self._check_open()
            self._set_sync("NORMAL")
            row = self._db.execute("DELETE FROM outbox WHERE id = ? RETURNING size", (msg_id,)).fetchone()
            if row is None:
                return False
            self._bytes -= row[0]
            self._count -= 1
            return True

    def ack_seqs(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged messages by sequence number, in one transaction; return how many."""
        if not seqs:
            return 0
        with self._lock:
            self._check_open()
            db = self._db
            self._set_sync("NORMAL")  # a lost delete is a duplicate later, never a loss
            db.execute("BEGIN IMMEDIATE")
            try:
                sizes = [r[0] for s in seqs
                         for r in db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", (s,))]
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self._bytes -= sum(sizes)
            self._count -= len(sizes)
            return len(sizes)

    def command_handled(self, command_id: str) -> bool:
        """Was this command id handled before (in this run or an earlier one)?"""
        with self._rlock:
            self._check_open()
            row = self._rdb.execute("SELECT 1 FROM handled_commands WHERE id = ?", (command_id,)).fetchone()
        return row is not None

    def last_seq(self) -> int:
        with self._rlock:
            self._check_open()
            row = self._rdb.execute("SELECT MAX(seq) FROM outbox").fetchone()
        return int(row[0] or 0)

    # -- accounting ------------------------------------------------------------------------------
    def depth(self) -> int:
        return self._count

    def bytes(self) -> int:
        return self._bytes

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting message was queued; None when empty."""
        with self._rlock:
            self._check_open()
            row = self._rdb.execute("SELECT MIN(created_at) FROM outbox").fetchone()
        return None if row[0] is None else max(0.0, time.time() - row[0])

    def dropped(self) -> dict[str, int]:
        """Messages dropped by the size policy since the outbox was created (persisted)."""
        return {"metrics": self._dropped.get("dropped_metrics", 0), "events": self._dropped.get("dropped_events", 0)}

    def stats(self) -> dict[str, object]:
        age = self.oldest_age()
        return {"depth": self.depth(), "bytes": self.bytes(), "max_bytes": self.max_bytes,
                "events_max_bytes": self.events_max_bytes, "oldest_age_s": None if age is None else round(age, 3),
                "dropped": self.dropped()}

    def _reload_totals(self, db: sqlite3.Connection | None = None) -> None:
        db = db or self._db
        row = db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM outbox").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])
        self._dropped = {k: v for k, v in db.execute("SELECT name, value FROM counters")}

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the outbox is closed")

    def close(self) -> None:
        with self._lock, self._rlock:
            if not self.closed:
                self.closed = True
                self._rdb.close()
                self._db.close()


def read_stats(path: str | Path) -> dict[str, object] | None:
    """Outbox figures for ``edge-runtime status``, read-only, while the agent runs or not."""
    p = Path(path)
    if not p.exists():
        return None
    db = sqlite3.connect(p, timeout=5)
    try:
        n, size, oldest = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created_at) FROM outbox").fetchone()
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind").fetchall())
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    finally:
        db.close()
    return {"depth": n, "bytes": size, "by_kind": kinds,
            "oldest_age_s": None if oldest is None else round(max(0.0, time.time() - oldest), 3),
            "dropped": {"metrics": counters.get("dropped_metrics", 0), "events": counters.get("dropped_events", 0)}}


def _rollback(db: sqlite3.Connection) -> None:
    """Undo a failed transaction. SQLite has often rolled back already (a full disk, an I/O
    error): a second ROLLBACK would raise "no transaction is active" and hide the real error."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback after a failed outbox write: %s", exc)


def _salvage(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int | None]:
    """Read what can still be read from a damaged outbox: (message rows, handled command ids,
    how many messages it held or None). Reads in windows of sequence numbers and skips a window
    that fails, so one bad page loses the messages on it, not the whole queue."""
    rows: list[tuple[object, ...]] = []
    handled: list[tuple[object, ...]] = []
    total: int | None = None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return rows, handled, None
    try:
        try:
            total = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            total = None
        try:
            top = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0])
        except (sqlite3.Error, TypeError):
            top = 1 << 20
        step, seq, failures = 64, 0, 0
        while seq <= top and failures < 1000:
            try:
                rows.extend(db.execute("SELECT seq, id, topic, payload, kind, created_at, size FROM outbox "
                                       "WHERE seq > ? AND seq <= ? ORDER BY seq", (seq, seq + step)).fetchall())
            except sqlite3.Error:
                failures += 1
            seq += step
        try:
            handled = db.execute("SELECT id, handled_at FROM handled_commands").fetchall()
        except sqlite3.Error:
            handled = []
    finally:
        db.close()
    return rows, handled, total

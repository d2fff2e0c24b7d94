"""The durable outbox on its own: order, durability across reopen, size policy, drop counts."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge_runtime.sync.outbox import ROW_OVERHEAD, Outbox, read_stats


def _size(payload: bytes, topic: str) -> int:
    return len(payload) + len(topic) + ROW_OVERHEAD


def test_fifo_ack_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    ob = Outbox(db)
    ids = [ob.put("events", f'{{"n": {i}}}'.encode(), kind="event") for i in range(5)]
    assert len(set(ids)) == 5 and all(isinstance(i, str) and len(i) == 32 for i in ids)
    msgs = ob.peek(10)
    assert [m.id for m in msgs] == ids  # oldest first
    assert ob.ack(ids[1]) is True and ob.ack(ids[1]) is False
    assert ob.ack_seqs([msgs[0].seq, msgs[4].seq]) == 2
    assert ob.depth() == 2
    ob.close()

    again = Outbox(db)  # a restart sees exactly what was not acknowledged
    assert [m.id for m in again.peek(10)] == [ids[2], ids[3]]
    assert again.depth() == 2 and again.bytes() == 2 * _size(b'{"n": 2}', "events")
    assert again.peek(10, after_seq=msgs[2].seq)[0].id == ids[3]
    assert again.peek(10, after_seq=0, upto_seq=msgs[2].seq)[0].id == ids[2]
    age = again.oldest_age()
    assert age is not None and 0 <= age < 60
    again.close()


def test_drop_metrics_first_then_events_past_second_limit(tmp_path: Path) -> None:
    payload = b"x" * 900
    per = _size(payload, "q")
    ob = Outbox(tmp_path / "o.db", max_bytes=10 * per, events_max_bytes=15 * per)
    metrics = [ob.put("q", payload, kind="metrics") for _ in range(6)]
    events = [ob.put("q", payload, kind="event") for _ in range(4)]
    assert ob.depth() == 10 and ob.dropped() == {"metrics": 0, "events": 0}

    # full: a new event pushes out the oldest metrics snapshot, never an event
    e = ob.put("q", payload, kind="event")
    left = {m.id for m in ob.peek(100)}
    assert metrics[0] not in left and set(metrics[1:]) <= left and set(events) <= left and e in left
    assert ob.dropped() == {"metrics": 1, "events": 0}

    # events keep coming: all metrics go, then events grow past the first limit up to the second
    more = [ob.put("q", payload, kind="event") for _ in range(10)]
    kinds = [m.kind for m in ob.peek(100)]
    assert "metrics" not in kinds
    assert ob.bytes() <= 15 * per and len(kinds) == 15
    assert ob.dropped() == {"metrics": 6, "events": 0}

    # a new metrics snapshot cannot push events out: it is the one dropped
    assert ob.put("q", payload, kind="metrics") is None
    assert ob.dropped() == {"metrics": 7, "events": 0}

    # at the second limit the oldest events go, and are counted
    last = ob.put("q", payload, kind="event")
    ids = [m.id for m in ob.peek(100)]
    assert last == ids[-1] and events[0] not in ids and ids[0] == events[1]
    assert ob.dropped() == {"metrics": 7, "events": 1}
    assert more[-1] in ids
    ob.close()

    # the counts are persisted and readable by `status`
    stats = read_stats(tmp_path / "o.db")
    assert stats is not None and stats["dropped"] == {"metrics": 7, "events": 1} and stats["depth"] == 15
    assert Outbox(tmp_path / "o.db").dropped() == {"metrics": 7, "events": 1}


def test_drop_oldest_policy_drops_any_kind(tmp_path: Path) -> None:
    payload = b"y" * 100
    per = _size(payload, "events")
    ob = Outbox(tmp_path / "o.db", max_bytes=3 * per, policy="drop-oldest")
    first = ob.put("events", payload, kind="event")
    for _ in range(3):
        ob.put("events", payload, kind="event")
    assert first not in {m.id for m in ob.peek(10)}
    assert ob.depth() == 3 and ob.dropped() == {"metrics": 0, "events": 1}


def test_message_larger_than_the_outbox_is_dropped_and_counted(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=200, events_max_bytes=300)
    assert ob.put("events", b"z" * 1000, kind="event") is None
    assert ob.depth() == 0 and ob.dropped()["events"] == 1


def test_concurrent_puts_are_all_kept(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", sync="normal")
    out: list[str | None] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(100):
            mid = ob.put("events", f"{k}-{i}".encode(), kind="event" if i % 2 else "metrics")
            with lock:
                out.append(mid)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 400 and None not in out
    assert ob.depth() == 400 and len(ob.peek(1000)) == 400


def test_unknown_kind_is_refused_and_nothing_half_written(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    with pytest.raises(ValueError, match="kind"):
        ob.put_many([("events", b"a", "event", None, None), ("events", b"b", "log", None, None)])
    assert ob.depth() == 0 and ob.bytes() == 0


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    db.write_bytes(b"this is not a database" * 100)
    ob = Outbox(db)
    assert ob.depth() == 0
    assert ob.put("events", b"{}", kind="event")
    assert list(tmp_path.glob("outbox.db.corrupt-*"))
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_garbled_data_pages_salvage_what_can_be_read_and_count_the_loss(tmp_path: Path) -> None:
    """A header that opens but data pages that do not (a bad sector, a torn write): the agent
    must start, keep every message it can still read, and say how many it lost."""
    db = tmp_path / "outbox.db"
    ob = Outbox(db)
    ids = [ob.put("events", b'{"n": %d, "pad": "%s"}' % (i, b"x" * 300), kind="event") for i in range(400)]
    ob.close()
    with sqlite3.connect(db) as c:  # fold the WAL into the file, as a long-running agent has
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for p in (len(data) // page // 2, len(data) // page // 2 + 1):  # two pages in the middle
        data[p * page: (p + 1) * page] = b"\xff" * page
    db.write_bytes(bytes(data))

    ob = Outbox(db)  # must not raise "database disk image is malformed"
    rec = ob.recovered
    assert rec is not None and rec["moved_to"].startswith("outbox.db.corrupt-")
    assert 0 < rec["salvaged"] < 400 and ob.depth() == rec["salvaged"]
    assert rec["lost"] is None or rec["lost"] == 400 - rec["salvaged"]
    kept = [m.id for m in ob.peek(1000)]
    assert kept == [i for i in ids if i in set(kept)]  # in the original order
    assert ob.put("events", b"{}", kind="event")  # and it works as an outbox again
    assert (tmp_path / rec["moved_to"]).exists()


def test_a_full_disk_reports_the_real_error_and_keeps_the_totals(tmp_path: Path) -> None:
    """SQLite rolls back by itself on a full disk; the outbox must not mask that with its own
    failed ROLLBACK, and its counts must still match the file."""
    ob = Outbox(tmp_path / "o.db", sync="normal")
    ob.put("events", b"{}", kind="event")
    ob._db.execute("PRAGMA max_page_count = 8")  # this connection can grow the file no further
    with pytest.raises(sqlite3.Error) as exc:
        for _ in range(200):
            ob.put("events", b"x" * 4000, kind="event")
    assert "full" in str(exc.value)
    on_disk = sqlite3.connect(tmp_path / "o.db").execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert ob.depth() == on_disk

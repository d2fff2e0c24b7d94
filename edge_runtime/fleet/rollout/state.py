"""Rollouts on disk: one SQLite database under the fleet's ``data_dir`` (``rollouts.db``), a JSON
document per rollout, written in one transaction per change, so the controller survives its own
kill -9 and ``rollout status`` reads it with or without a controller running. ``pause``,
``resume`` and ``abort`` from another process are requests the controller picks up on its next tick.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError

RUNNING, PAUSED, COMPLETED, ROLLED_BACK, ABORTED = "running", "paused", "completed", "rolled_back", "aborted"
FINISHED = (COMPLETED, ROLLED_BACK, ABORTED)
DB_FILE = "rollouts.db"


class RolloutStore:
    def __init__(self, data_dir: str | Path) -> None:
        d = Path(data_dir)
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / DB_FILE
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS rollouts (id TEXT PRIMARY KEY, grp TEXT NOT NULL, "
                        "state TEXT NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL, request TEXT)")

    def close(self) -> None:
        self.db.close()

    def create(self, doc: dict[str, Any], *, replace: bool = False) -> None:
        """A new rollout for a group; refused while another is unfinished there unless ``replace``
        (which marks that one aborted; its controller stops on its next tick)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            busy = self.db.execute("SELECT id FROM rollouts WHERE grp = ? AND state NOT IN (?, ?, ?)",
                                   (doc["group"], *FINISHED)).fetchall()
            if busy and not replace:
                raise ConfigError(f"group {doc['group']!r} has a rollout in progress ({busy[0][0]}): wait for it, "
                                  "abort it (edge-runtime rollout abort), or start with --replace")
            for (rid,) in busy:
                old = self.get(rid)
                if old is not None:
                    old.update(state=ABORTED, reason=f"replaced by rollout {doc['id']}")
                    self._write(old)
            self.db.execute("INSERT INTO rollouts (id, grp, state, created, doc) VALUES (?, ?, ?, ?, ?)",
                            (doc["id"], doc["group"], doc["state"], time.time(), json.dumps(doc)))

    def save(self, doc: dict[str, Any]) -> None:
        with self.db:
            self._write(doc)

    def _write(self, doc: dict[str, Any]) -> None:
        doc["updated"] = time.time()
        self.db.execute("UPDATE rollouts SET state = ?, doc = ? WHERE id = ?", (doc["state"], json.dumps(doc),
                                                                                doc["id"]))

    def get(self, rollout_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def find(self, *, group: str | None = None, rollout_id: str | None = None) -> dict[str, Any] | None:
        """One rollout by id, or the newest of a group (or of the fleet)."""
        if rollout_id:
            return self.get(rollout_id)
        q = "SELECT doc FROM rollouts"
        args: tuple[str, ...] = ()
        if group:
            q, args = q + " WHERE grp = ?", (group,)
        row = self.db.execute(q + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return json.loads(row[0]) if row else None

    def request(self, rollout_id: str, what: str) -> None:
        """pause | resume | abort, for the controller to act on."""
        with self.db:
            self.db.execute("UPDATE rollouts SET request = ? WHERE id = ?", (what, rollout_id))

    def take_request(self, rollout_id: str) -> str | None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT request FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            if row and row[0]:
                self.db.execute("UPDATE rollouts SET request = NULL WHERE id = ?", (rollout_id,))
                return str(row[0])
        return None

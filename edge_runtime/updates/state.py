"""What the device remembers about updates, in ``data_dir/updates/state.json``.

    {"sequences": {"device:pi-01": 17, "group:eu": 12, "all": 3},   # last accepted, per target
     "docs": {"device:pi-01": {signed desired doc}, ...},          # accepted desired states
     "current": {"id", "type", "target_key", "name", "version", "state", "reason", "force",
                 "signed"} | null,                                 # the update in hand
     "outcomes": {"<update id>": "committed" | "failed" | ...},    # the last few, not retried
     "probation": {"update_id", "name", "version", "started_at", "restarts", "clean_stop",
                   "baseline": {...}} | null}

Written whole (temp file + fsync + rename) before the step it records takes effect, so a
restart can never see a sequence lower than one already acted on (replay protection
survives power loss) and always finds the update it was in the middle of.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from edge_runtime.store import write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
OUTCOMES_KEPT = 64
FINAL = ("committed", "failed", "refused", "rolled_back", "superseded")


class UpdateState:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / STATE_FILE
        self.lock = threading.RLock()
        self.sequences: dict[str, int] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self.outcomes: dict[str, str] = {}
        self.probation: dict[str, Any] | None = None
        self.keyset: dict[str, Any] | None = None  # the last accepted signed key-set document
        self.reset_reason: str | None = None  # set when an unreadable file was moved aside at start
        self._load()

    def _load(self) -> None:
        try:
            d = json.loads(self.path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing yet (a data dir that cannot exist is reported when the agent starts)
        except (OSError, ValueError) as exc:
            # never silently forget the sequences: refuse everything until an operator looks
            bad = self.path.with_suffix(".corrupt")
            self.path.replace(bad)
            self.reset_reason = (f"{self.path.name} was unreadable ({str(exc)[:120]}); moved to {bad.name}: "
                                 "accepted sequences, the update in hand and probation start over")
            log.error("update state: %s", self.reset_reason)
            return
        if not isinstance(d, dict):
            d = {}
        self.sequences = {str(k): int(v) for k, v in dict(d.get("sequences") or {}).items()}
        self.docs = dict(d.get("docs") or {})
        self.current = d.get("current")
        self.outcomes = dict(d.get("outcomes") or {})
        self.probation = d.get("probation")
        self.keyset = d.get("keyset")

    def save(self) -> None:
        with self.lock:
            doc = {"sequences": self.sequences, "docs": self.docs, "current": self.current,
                   "outcomes": self.outcomes, "probation": self.probation, "keyset": self.keyset}
            write_atomic(self.path, json.dumps(doc, indent=1, default=str).encode())

    def accept(self, target_key: str, sequence: int) -> None:
        with self.lock:
            self.sequences[target_key] = sequence

    def count_start(self, max_restarts: int) -> dict[str, Any] | None:
        """At start, before the model loads: count this start against a version in probation
        (a clean stop does not count) and save it, so a crash while loading counts too. Returns
        the previous version to start on instead when the count is over ``max_restarts``."""
        p = self.probation
        if not p:
            return None
        if p.get("clean_stop"):
            p["clean_stop"] = False
        else:
            p["restarts"] = int(p.get("restarts", 0)) + 1
        self.save()
        return p.get("previous") if p["restarts"] > max_restarts else None

    def finish(self, update_id: str, outcome: str) -> None:
        with self.lock:
            self.outcomes[update_id] = outcome
            while len(self.outcomes) > OUTCOMES_KEPT:
                self.outcomes.pop(next(iter(self.outcomes)))

"""Key rotation on the device: a signed key-set document (retained on ``edge/{fleet}/keys``, or a
``keys`` command) replaces the keys the device trusts, persisted before it is used, so a
restart keeps the rotated keys (see ``KeyRing.rotate`` for what makes one acceptable)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from edge_runtime.agent.reporter import Reporter
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.updates.state import UpdateState
from edge_runtime.updates.trust import KeyRing

log = logging.getLogger(__name__)


class KeySet:
    def __init__(self, ring: KeyRing, state: UpdateState, reporter: Reporter, fleet: str,
                 lock: threading.RLock) -> None:
        self.ring, self.state, self.reporter, self.fleet, self.lock = ring, state, reporter, fleet, lock
        if state.keyset:  # a rotation accepted before replaces the config's keys
            try:
                ring.replace_with(KeyRing.from_keyset(state.keyset))
            except (KeyError, ValueError, TypeError, EdgeRuntimeError) as exc:
                log.error("the stored key set is unreadable (%s); using the config's keys", exc)

    def on_retained(self, payload: bytes) -> None:
        """The retained key set (every connect): rotate when it is a newer one."""
        try:
            signed = json.loads(payload)
        except (ValueError, RecursionError):
            self.reporter.event("keys_refused", reason="the key set is not JSON")
            return
        doc = signed.get("doc") if isinstance(signed, dict) else None
        if isinstance(doc, dict) and doc.get("version") == self.ring.version:
            return  # the key set in use
        result = self.rotate(signed)
        self.reporter.event(result.pop("type"), **result)

    def rotate(self, signed: Any) -> dict[str, Any]:
        """Accept a key-set document (persisted first, then trusted); the answer to report."""
        try:
            new = self.ring.rotate(signed, self.fleet)
        except EdgeRuntimeError as exc:
            return {"type": "keys_refused", "reason": str(exc)[:500]}
        with self.state.lock:
            self.state.keyset = signed
            self.state.save()
        with self.lock:
            self.ring.replace_with(new)
        log.info("trusted keys rotated to version %d", new.version)
        return {"type": "keys_rotated", "version": new.version, "artifact_keys": sorted(k[:16] for k in new.artifact),
                "deployment_keys": sorted(k[:16] for k in new.deployment)}

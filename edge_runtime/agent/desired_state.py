"""Which signed document a device should act on: check new ones (signature, target, expiry,
sequence), persist what it accepted (the sequence first: replay protection survives power
loss), and pick the most specific desired state it holds (device, then its groups, then the
fleet). The updater applies what this chooses."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from edge_runtime.agent.reporter import Reporter
from edge_runtime.config import Config
from edge_runtime.errors import TrustError
from edge_runtime.updates.desired import Document, Refused, check, update_id
from edge_runtime.updates.state import UpdateState
from edge_runtime.updates.trust import KeyRing

log = logging.getLogger(__name__)

_ACCEPTED_BEFORE = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)  # a stored document's expiry was checked on arrival


class DesiredStates:
    def __init__(self, cfg: Config, ring: KeyRing, state: UpdateState, reporter: Reporter) -> None:
        self.cfg = cfg
        self.ring = ring
        self.state = state
        self.reporter = reporter

    def check(self, signed: Any) -> Document:
        """A new document, if this device should act on it; else Refused or TrustError."""
        d = self.cfg.device
        return check(signed, self.ring, device=d.id, fleet=d.fleet, groups=tuple(d.groups),
                     sequences=self.state.sequences)

    def recheck(self, signed: Any) -> Document:
        """A document accepted before (signature and address again, not its sequence or expiry)."""
        d = self.cfg.device
        return check(signed, self.ring, device=d.id, fleet=d.fleet, groups=tuple(d.groups), sequences={},
                     now=_ACCEPTED_BEFORE)

    def accept(self, doc: Document, *, store_doc: bool) -> None:
        """Persist the sequence (replay protection) before anything acts on the document."""
        with self.state.lock:
            self.state.accept(doc.target_key, doc.sequence)
            if store_doc:
                self.state.docs[doc.target_key] = doc.signed
            self.state.save()

    def receive(self, level: str, payload: bytes) -> bool:
        """A retained message on a ``desired`` topic (``level``: ``device:ID``, ``group:G`` or
        ``all``); True when what the device should run may have changed. Refusals are reported."""
        if not payload:  # a cleared retained message: this level no longer says anything
            if self.state.docs.pop(level, None) is None:
                return False
            self.state.save()
            log.info("desired state for %s cleared", level)
            return True
        try:
            signed = json.loads(payload)
        except (ValueError, RecursionError):
            self.reporter.event("update_refused", reason=f"desired state on {level} is not JSON", update_id=None)
            return False
        known = self.state.docs.get(level)
        if known is not None and uid_of(known) == uid_of(signed):
            return True  # the retained copy again (every reconnect)
        try:
            doc = self.check(signed)
            if doc.target_key != level:
                raise Refused(f"published on the {level} topic but addressed to {doc.target_key}")
            if doc.type != "desired":
                raise Refused("only desired documents are retained")
        except (Refused, TrustError) as exc:
            self.reporter.event("update_refused", reason=exc.reason, update_id=uid_of(signed), topic_level=level)
            return False
        self.accept(doc, store_doc=True)
        return True

    def command_document(self, cmd: dict[str, Any], kind: str) -> Document | dict[str, Any]:
        """The checked and accepted document a signed command carries, or the refusal to answer."""
        signed = {"doc": cmd.get("doc"), "signatures": cmd.get("signatures")}
        try:
            doc = self.check(signed)
        except (Refused, TrustError) as exc:
            return {"type": "update_refused", "reason": exc.reason, "update_id": uid_of(signed)}
        if doc.type != kind:
            return {"type": "update_refused", "reason": f"a {cmd.get('cmd')} command carries a {kind} document",
                    "update_id": doc.update_id}
        self.accept(doc, store_doc=False)
        return doc

    def effective(self) -> Document | None:
        """The most specific desired document this device holds."""
        best: tuple[int, int, Document] | None = None
        for signed in self.state.docs.values():
            try:
                doc = self.recheck(signed)
            except (Refused, TrustError):
                continue
            key = (doc.specificity, doc.sequence)
            if best is None or key > best[:2]:
                best = (*key, doc)
        return best[2] if best else None


def uid_of(signed: Any) -> str | None:
    doc = signed.get("doc") if isinstance(signed, dict) else None
    return update_id(doc) if isinstance(doc, dict) else None

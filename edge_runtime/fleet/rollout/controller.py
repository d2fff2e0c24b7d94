"""The rollout controller: points a growing share of a group's devices at an artifact, step by
step, and promotes, holds or rolls back each step on what the devices report.

Each tick: take a pause/resume/abort request; at a step, point its new canaries at the artifact
with per-device signed desired documents; follow each canary's state (pending, downloading,
probation, committed, failed, rolled_back, silent) from its retained status, its update events
and its metrics; once every canary of the step has committed, open the window, and after it
compare the canaries' figures with the baseline devices' (``analysis.decide``). Too many failed
or silent devices, or a rollback decision, point every canary back at the baseline (``force``).
The last step (100%) completes when every device has committed: the group's own desired state
then names the artifact and the per-device documents are cleared. Everything is saved in the
``RolloutStore`` after every change, so ``resume`` continues where a killed controller stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.fleet import server as fs
from edge_runtime.fleet.config import FleetConfig
from edge_runtime.fleet.rollout.analysis import Figures, decide
from edge_runtime.fleet.rollout.membership import members
from edge_runtime.fleet.rollout.plan import Plan
from edge_runtime.fleet.rollout.state import ABORTED, COMPLETED, FINISHED, PAUSED, ROLLED_BACK, RUNNING, RolloutStore

log = logging.getLogger(__name__)

MOVING = {"received", "checking_space", "downloading", "verifying", "staging", "activating"}
COUNTED = ("model", "cache", "fallback", "error")


class RolloutServer(fs.UpdateServer):
    """The update server, also following every device's metrics snapshots."""

    def __init__(self, cfg: FleetConfig) -> None:
        super().__init__(cfg)
        self.metrics: dict[str, tuple[float, dict[str, Any]]] = {}  # device -> (received, runtime section)

    def _on_connect(self) -> None:
        super()._on_connect()
        self.link.client.subscribe([(f"{fs.ROOT}/{self.fleet}/devices/+/metrics", 1)])

    def _on_message(self, topic_name: str, payload: bytes, ack: Callable[[], None]) -> None:
        parts = topic_name.split("/")
        if len(parts) == 5 and parts[2] == "devices" and parts[4] == "metrics":
            ack()
            try:
                body = json.loads(payload)
                rt = body.get("runtime") if isinstance(body, dict) else None
            except ValueError:
                return
            if isinstance(rt, dict):
                with self._changed:
                    self.metrics[parts[3]] = (time.monotonic(), rt)
            return
        super()._on_message(topic_name, payload, ack)

    def group_devices(self, group: str) -> list[str]:
        with self._changed:
            return sorted(d for d, v in self.devices.items() if group in (v.status.get("groups") or []))


def counters(rt: dict[str, Any] | None, version: str) -> dict[str, int]:
    by = ((rt or {}).get("by_version") or {}).get(version) or {}
    return {k: int(by.get(k, 0)) for k in COUNTED}


class Controller:
    def __init__(self, cfg: FleetConfig, store: RolloutStore, doc: dict[str, Any], key_path: Path, *,
                 tick_s: float = 0.5, out: Callable[[str], None] = print) -> None:
        self.cfg, self.store, self.doc, self.key = cfg, store, doc, key_path
        self.plan = Plan.from_dict(doc["plan"])
        self.tick_s = tick_s
        self.out = out
        self.srv: RolloutServer | None = None

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self, *, settle_s: float = 1.0) -> int:
        """Until the rollout completes (0), is rolled back or aborted (1)."""
        srv = self.srv = RolloutServer(self.cfg)
        for art in (self.doc["artifact"], self.doc["baseline"]):
            srv.register(Path(art["dir"]))
        srv.start()
        try:
            time.sleep(settle_s)  # retained statuses arrive: which devices are in the group
            while self.doc["state"] not in FINISHED:
                self._tick()
                time.sleep(self.tick_s)
        finally:
            srv.stop()
        self.out(f"rollout {self.doc['id']}: {self.doc['state']}: {self.doc.get('reason', '')}")
        return 0 if self.doc["state"] == COMPLETED else 1

    def _tick(self) -> None:
        d = self.doc
        d["controller"] = {"pid": os.getpid(), "heartbeat": time.time()}
        req = self.store.take_request(d["id"])
        fresh = self.store.get(d["id"])
        if fresh is not None and fresh["state"] == ABORTED and d["state"] != ABORTED:  # replaced by another rollout
            d.update(state=ABORTED, reason=fresh.get("reason", "replaced"))
            return
        if req == "abort":
            self._back(ABORTED, "aborted by the operator")
            return
        if req == "pause" and d["state"] == RUNNING:
            self._set(PAUSED, "paused by the operator: edge-runtime rollout resume to go on")
        elif req == "resume" and d["state"] == PAUSED:
            step = self.plan.steps[d["step"]]
            if step.pause:
                d["step"] += 1
            self._set(RUNNING, "resumed")
        if d["state"] == PAUSED:
            self.store.save(d)
            return
        self._advance()
        self.store.save(d)

    def _set(self, state: str, reason: str) -> None:
        self.doc.update(state=state, reason=reason)
        self.out(f"{self.doc['id']}: {state}: {reason}")
        self.store.save(self.doc)

    # -- one step ---------------------------------------------------------------------------------------
    def _advance(self) -> None:
        d, plan = self.doc, self.plan
        step = plan.steps[d["step"]]
        rec = self._record()
        if step.pause:
            self._set(PAUSED, f"pause step {d['step'] + 1}: edge-runtime rollout resume to go on")
            return
        assert self.srv is not None
        group = self.srv.group_devices(d["group"])
        want = members(d["id"], group, step.percent)
        for dev in want:
            if dev not in d["devices"]:
                self._point(dev, d["artifact"], force=False)  # records its update id
        rec["devices"] = want
        now = time.monotonic()
        for dev in want:
            d["devices"][dev]["state"] = self._device_state(dev, now)
        states = [d["devices"][x]["state"] for x in want]
        failed = [x for x in d["devices"] if d["devices"][x]["state"] in ("failed", "rolled_back")]
        silent = [x for x in want if d["devices"][x]["state"] == "silent"]
        rec["silent"] = silent
        if len(failed) > plan.max_failed:
            self._back(ROLLED_BACK, f"{len(failed)} device(s) failed or rolled back (max_failed {plan.max_failed}): "
                                    f"{', '.join(sorted(failed)[:20])}")
            return
        if want and len(silent) / len(want) > plan.max_silent:
            self._back(ROLLED_BACK, f"{len(silent)} of {len(want)} device(s) silent (max_silent {plan.max_silent:g}): "
                                    f"{', '.join(silent[:20])}")
            return
        if not want or any(s not in ("committed", "failed", "rolled_back") for s in states):
            rec["decision"], rec["reason"] = "wait", f"{states.count('committed')} of {len(want)} device(s) committed"
            return
        if step.percent >= 100:
            rec["decision"], rec["reason"] = "complete", f"all {len(want)} device(s) committed"
            self._complete()
            return
        if rec.get("window_start") is None:
            rec["window_start"] = time.time()  # wall clock: a resumed controller (another process) goes on
            rec["snapshot"] = self._snapshot(group, want)
            rec["decision"], rec["reason"] = "window", f"every canary committed: window of {plan.window_s:g} s"
            return
        if time.time() - rec["window_start"] < plan.window_s:
            return
        canary, baseline = self._figures(group, want, rec["snapshot"])
        decision = decide(plan, canary, baseline)
        rec.update(decision=decision.action, reason=decision.reason, figures={"canary": canary.to_dict(),
                                                                              "baseline": baseline.to_dict()})
        if decision.action == "rollback":
            self._back(ROLLED_BACK, f"step {step.label()}: {decision.reason}")
        elif decision.action == "promote":
            self.out(f"{d['id']}: step {step.label()} promoted: {decision.reason}")
            d["step"] += 1

    def _record(self) -> dict[str, Any]:
        d = self.doc
        while len(d["steps"]) <= d["step"]:
            s = self.plan.steps[len(d["steps"])]
            d["steps"].append({"label": s.label(), "percent": s.percent, "started": time.time(), "decision": None,
                               "reason": None, "figures": None, "devices": [], "silent": []})
        return d["steps"][d["step"]]  # type: ignore[no-any-return]

    def _device_state(self, dev: str, now: float) -> str:
        assert self.srv is not None
        d = self.doc
        uid = d["devices"][dev].get("uid")
        view = self.srv.devices.get(dev, fs.DeviceView())
        # the event, or (for a controller resumed after the event) the retained status's record of it
        outcome = (view.outcome.get(uid) or (view.status.get("outcomes") or {}).get(uid)) if uid else None
        if outcome in ("failed", "refused", "superseded"):
            return "failed"
        if outcome == "rolled_back":
            return "rolled_back"
        got = self.srv.metrics.get(dev)
        stale = got is None or now - got[0] > 2 * max(self.plan.window_s, 1.0)
        if view.status.get("state") == "offline":
            return "silent"
        if outcome == "committed":
            return "silent" if stale and d["steps"][d["step"]].get("window_start") is not None else "committed"
        upd = view.status.get("update") or {}
        if upd.get("id") == uid and upd.get("state") == "probation":
            return "probation"
        if upd.get("id") == uid and upd.get("state") in MOVING:
            return "downloading"
        return "pending"

    # -- figures -------------------------------------------------------------------------------------------
    def _snapshot(self, group: list[str], canaries: list[str]) -> dict[str, dict[str, int]]:
        assert self.srv is not None
        d = self.doc
        out = {}
        for dev in group:
            version = d["artifact"]["version"] if dev in canaries else d["baseline"]["version"]
            out[dev] = counters((self.srv.metrics.get(dev) or (0.0, {}))[1], version)
        return out

    def _figures(self, group: list[str], canaries: list[str], snap: dict[str, dict[str, int]]
                 ) -> tuple[Figures, Figures]:
        now = self._snapshot(group, canaries)
        sums = {True: dict.fromkeys(COUNTED, 0), False: dict.fromkeys(COUNTED, 0)}
        p99s: dict[bool, list[float]] = {True: [], False: []}
        for dev, c in now.items():
            side = dev in canaries
            before = snap.get(dev, dict.fromkeys(COUNTED, 0))
            for k in COUNTED:
                sums[side][k] += max(0, c[k] - before.get(k, 0))
            rt = (self.srv.metrics.get(dev) or (0.0, {}))[1] if self.srv else {}
            p99 = (rt.get("latency_ms") or {}).get("p99")
            if isinstance(p99, (int, float)):
                p99s[side].append(float(p99))

        def fig(side: bool, n_dev: int) -> Figures:
            s = sums[side]
            return Figures(samples=sum(s.values()), errors=s["error"], fallbacks=s["fallback"],
                           p99_ms=max(p99s[side]) if p99s[side] else None, devices=n_dev)

        return fig(True, len(canaries)), fig(False, len(group) - len(canaries))

    # -- documents ---------------------------------------------------------------------------------------
    def _point(self, dev: str, art: dict[str, Any], *, force: bool) -> None:
        assert self.srv is not None
        target = {"device": dev}
        doc = fs.desired_document(self.doc["fleet"], target, Path(art["dir"]), sequence=None,
                                  expires_in_s=7 * 86400, force=force)
        signed = fs.signed_desired(doc, self.key)
        self.srv.publish(fs.desired_topic(self.doc["fleet"], target), json.dumps(signed).encode(), retain=True)
        self.doc["devices"].setdefault(dev, {"state": "pending", "step": self.doc["step"] + 1})
        self.doc["devices"][dev]["uid"] = fs.update_id(doc)

    def _back(self, state: str, reason: str) -> None:
        """Every canary back to the baseline (force: it is older), then stop."""
        for dev in sorted(self.doc["devices"]):
            try:
                self._point(dev, self.doc["baseline"], force=True)
            except Exception as exc:  # keep going: the others still go back
                log.error("could not point %s back at the baseline: %s", dev, exc)
        self._set(state, reason)

    def _complete(self) -> None:
        assert self.srv is not None
        d = self.doc
        target = {"group": d["group"]}
        doc = fs.desired_document(d["fleet"], target, Path(d["artifact"]["dir"]), sequence=None,
                                  expires_in_s=365 * 86400, force=False)
        self.srv.publish(fs.desired_topic(d["fleet"], target), json.dumps(fs.signed_desired(doc, self.key)).encode(),
                         retain=True)
        for dev in d["devices"]:  # the group's document now says the same: per-device ones are cleared
            self.srv.publish(fs.desired_topic(d["fleet"], {"device": dev}), b"", retain=True)
        self._set(COMPLETED, f"every device of group {d['group']} committed version {d['artifact']['version']}")

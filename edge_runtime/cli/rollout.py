"""``edge-runtime rollout start | status | pause | resume | abort``: canary rollouts over a group."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from edge_runtime.cli.publish import EXAMPLE_FLEET

HEARTBEAT_STALE_S = 15.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rollout", help="roll an artifact out to a group step by step, judged by its metrics",
                       description="Canary rollouts: `start` runs the controller in the foreground until the "
                       "rollout completes (exit 0), is rolled back or aborted (exit 1), or its input is bad "
                       "(exit 2). Its state lives under the fleet config's data_dir; `status` reads it.")
    rs = p.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    s = rs.add_parser("start", help="start a rollout and run its controller",
                      epilog=f"example: edge-runtime rollout start artifacts/churn-8 --config {EXAMPLE_FLEET} "
                      "--group eu --steps 1,5,25,100 --max-error-rate 0.01 --max-p99-ms 50 --min-samples 500 "
                      "--window 5m")
    s.add_argument("artifact", type=Path, metavar="ARTIFACT", help="signed artifact directory")
    _common(s)
    s.add_argument("--baseline", type=Path, metavar="DIR",
                   help="the artifact the group runs now (canaries return to it on a rollback); default: the "
                   "published artifact of the version most of the group reports")
    s.add_argument("--plan", type=Path, metavar="PLAN.toml", help="the plan from a file (keys as the flags)")
    s.add_argument("--steps", help="shares in %% and pause steps, e.g. 1,5,pause,25,100 (default 1,5,25,100)")
    s.add_argument("--max-error-rate", type=float)
    s.add_argument("--max-fallback-rate", type=float)
    s.add_argument("--max-p99-ms", type=float)
    s.add_argument("--min-samples", type=int)
    s.add_argument("--window", help="e.g. 5m, 90s (default 5m)")
    s.add_argument("--max-silent", type=float, help="share of a step's devices silent before it halts (0.2)")
    s.add_argument("--max-failed", type=int, help="devices failed or rolled back before it halts (0)")
    s.add_argument("--replace", action="store_true", help="abort the group's unfinished rollout and start this one")
    s.add_argument("--key", type=Path, metavar="DEPLOYMENT_KEY", help="signs the desired states (default: the "
                   "fleet config's [updates] deployment_key)")
    s.add_argument("--tick", type=float, default=0.5, help=argparse.SUPPRESS)
    s.set_defaults(func=start)
    st = rs.add_parser("status", help="the rollout's steps, devices by state, figures and decisions")
    _common(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=status)
    for name, helptext in (("pause", "hold the rollout at its current step"),
                           ("resume", "un-pause, or restart a stopped or killed controller from its saved step"),
                           ("abort", "return every canary device to the baseline and stop")):
        a = rs.add_parser(name, help=helptext)
        _common(a)
        if name == "resume":
            a.add_argument("--key", type=Path, metavar="DEPLOYMENT_KEY")
            a.add_argument("--tick", type=float, default=0.5, help=argparse.SUPPRESS)
        a.set_defaults(func=control, action=name)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, metavar="FLEET_CONFIG", help="fleet config (.toml)")
    p.add_argument("--group", "-g", help="the group (the rollout in progress there, or its latest)")
    p.add_argument("--id", dest="rollout_id", help="a rollout id instead of a group")


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from edge_runtime.fleet.config import load_fleet_config
    from edge_runtime.fleet.rollout.state import RolloutStore

    cfg = load_fleet_config(args.config)
    return cfg, RolloutStore(cfg.fleet.data_dir)


def _plan(args: argparse.Namespace) -> Any:
    from edge_runtime.fleet.rollout.plan import build, load_plan

    base = load_plan(args.plan).to_dict() if args.plan else {}
    if base:
        base["window"] = base.pop("window_s")
    flags = {"steps": [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None,
             "max_error_rate": args.max_error_rate, "max_fallback_rate": args.max_fallback_rate,
             "max_p99_ms": args.max_p99_ms, "min_samples": args.min_samples, "window": args.window,
             "max_silent": args.max_silent, "max_failed": args.max_failed}
    return build({**base, **{k: v for k, v in flags.items() if v is not None}})


def _entry(d: Path) -> dict[str, Any]:
    from edge_runtime.manifest import read_manifest

    m = read_manifest(d)
    return {"dir": str(d.resolve()), "name": m.name, "version": m.version}


def start(args: argparse.Namespace) -> int:
    from edge_runtime.errors import ConfigError
    from edge_runtime.fleet import server as fs

    cfg, store = _open(args)
    if not args.group:
        raise ConfigError("rollout start needs --group G (the devices it rolls out to)")
    plan = _plan(args)
    key = args.key or cfg.updates.deployment_key
    if key is None:
        raise ConfigError("no deployment key: pass --key or set [updates] deployment_key", file=cfg.file)
    print(f"checked {args.artifact}: {fs.check_artifact(args.artifact, cfg.updates.artifact_keys)}")
    baseline = args.baseline or _baseline_from_registry(cfg, args.group)
    rid = f"{args.group}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    doc = {"id": rid, "group": args.group, "fleet": cfg.fleet.name, "state": "running", "reason": "started",
           "created": time.time(), "artifact": _entry(args.artifact), "baseline": _entry(baseline),
           "plan": plan.to_dict(), "step": 0, "steps": [], "devices": {}, "key": str(Path(key).resolve())}
    store.create(doc, replace=args.replace)
    print(f"rollout {rid}: {doc['artifact']['name']} version {doc['artifact']['version']} to group {args.group} "
          f"(baseline version {doc['baseline']['version']}), steps {', '.join(s.label() for s in plan.steps)}",
          flush=True)
    return _run(cfg, store, doc, Path(key), args.tick)


def _run(cfg: Any, store: Any, doc: dict[str, Any], key: Path, tick: float) -> int:
    from edge_runtime.fleet.rollout.controller import Controller

    return Controller(cfg, store, doc, key, tick_s=tick, out=lambda s: print(s, flush=True)).run()


def _baseline_from_registry(cfg: Any, group: str) -> Path:
    """The published artifact of the version most of the group's devices report as active."""
    from collections import Counter

    from edge_runtime.errors import ConfigError
    from edge_runtime.fleet.server import UpdateServer
    from edge_runtime.manifest import read_manifest

    srv = UpdateServer(cfg)
    srv.start()
    try:
        time.sleep(1.0)
        versions = Counter((str((v.status.get("active") or {}).get("name")), str((v.status.get("active") or {})
                           .get("version"))) for v in srv.devices.values() if group in (v.status.get("groups") or []))
    finally:
        srv.stop()
    if versions:
        (name, version), _ = versions.most_common(1)[0]
        root = Path(cfg.fleet.data_dir) / "artifacts"
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                m = read_manifest(d)
            except Exception:
                continue
            if (m.name, m.version) == (name, version):
                return d
    raise ConfigError(f"cannot tell which artifact group {group!r} runs now (no published artifact matches the "
                      "devices' active version): pass --baseline DIR so canaries can be rolled back")


def status(args: argparse.Namespace) -> int:
    from edge_runtime.errors import ConfigError

    _, store = _open(args)
    doc = store.find(group=args.group, rollout_id=args.rollout_id)
    if doc is None:
        raise ConfigError("no rollout found" + (f" for group {args.group!r}" if args.group else ""))
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(render(doc))
    return 0


STATES = ("pending", "downloading", "probation", "committed", "failed", "rolled_back", "silent")


def render(doc: dict[str, Any]) -> str:
    ctl = doc.get("controller") or {}
    alive = bool(ctl) and time.time() - float(ctl.get("heartbeat", 0)) < HEARTBEAT_STALE_S
    lines = [f"rollout {doc['id']}  group {doc['group']}  {doc['artifact']['name']} "
             f"{doc['baseline']['version']} -> {doc['artifact']['version']}",
             f"state: {doc['state']} ({doc.get('reason', '')}); controller "
             f"{'running (pid ' + str(ctl.get('pid')) + ')' if alive else 'not running'}", "",
             "| step | share | devices | " + " | ".join(STATES) + " | decision | reason |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in STATES) + " | --- | --- |"]
    devs = doc.get("devices", {})
    for i, s in enumerate(doc.get("steps", [])):
        in_step = s.get("devices") or []
        counts = [sum(1 for d in in_step if devs.get(d, {}).get("state") == st) for st in STATES]
        lines.append(f"| {i + 1} | {s['label']} | {len(in_step)} | " + " | ".join(map(str, counts))
                     + f" | {s.get('decision') or ''} | {s.get('reason') or ''} |")
    for i, s in enumerate(doc.get("steps", [])):
        if s.get("figures"):
            c, b = s["figures"]["canary"], s["figures"]["baseline"]
            lines.append(f"step {i + 1} figures: canary {c['samples']} predictions, error rate {c['error_rate']} "
                         f"(95% {c['error_rate_95']}), p99 {c['p99_ms']} ms; baseline {b['samples']}, error rate "
                         f"{b['error_rate']}, p99 {b['p99_ms']} ms")
        if s.get("silent"):
            lines.append(f"step {i + 1} silent devices: {', '.join(s['silent'])}")
    return "\n".join(lines)


def control(args: argparse.Namespace) -> int:
    from edge_runtime.cli.status import pid_alive
    from edge_runtime.errors import ConfigError
    from edge_runtime.fleet.rollout.state import FINISHED

    cfg, store = _open(args)
    doc = store.find(group=args.group, rollout_id=args.rollout_id)
    if doc is None:
        raise ConfigError("no rollout found" + (f" for group {args.group!r}" if args.group else ""))
    if doc["state"] in FINISHED:
        raise ConfigError(f"rollout {doc['id']} is {doc['state']}: nothing to {args.action}")
    ctl = doc.get("controller") or {}
    alive = bool(ctl) and time.time() - float(ctl.get("heartbeat", 0)) < HEARTBEAT_STALE_S and pid_alive(
        int(ctl.get("pid", 0)))
    store.request(doc["id"], args.action)
    if alive or args.action != "resume":
        print(f"rollout {doc['id']}: {args.action} requested" + ("" if alive else
              " (no controller is running: it takes effect when one runs, e.g. rollout resume)"))
        if args.action == "abort" and not alive:  # no controller to do it: run one to point canaries back
            return _run(cfg, store, doc, Path(doc["key"]), 0.5)
        return 0
    print(f"rollout {doc['id']}: running the controller from step {doc['step'] + 1}", flush=True)
    return _run(cfg, store, doc, Path(args.key or doc["key"]), args.tick)


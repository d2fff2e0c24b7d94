"""edge-runtime publish | rollback | update-server --config FLEET_CONFIG"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLE_FLEET = "device_configs/fleet.toml"


def _target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--device", metavar="ID", help="one device")
    g.add_argument("--group", metavar="G", help="every device in group G")
    g.add_argument("--all", action="store_true", help="the whole fleet")
    p.add_argument("--config", "-c", required=True, metavar="FLEET_CONFIG", help="fleet config (.toml)")
    p.add_argument("--key", type=Path, metavar="DEPLOYMENT_KEY",
                   help="private key that signs the document (default: [updates] deployment_key)")
    p.add_argument("--sequence", type=int, help="the document's sequence (default: now in ms)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "publish", help="point devices at an artifact (signed, retained desired state) and serve it",
        description="Check the artifact (hash, signature), sign a desired-state document with the deployment "
        "key and publish it retained on the target's desired topic, so devices that are offline now "
        "converge when they come back. Then serve the artifact's chunks and print each device's progress "
        "until every targeted device has committed or failed, or --timeout. Devices that come later are "
        "served by edge-runtime update-server.",
        epilog=f"example: edge-runtime publish artifacts/churn-8 --config {EXAMPLE_FLEET} --group eu --wait")
    p.add_argument("dir", type=Path, metavar="DIR", help="signed artifact directory")
    _target_args(p)
    p.add_argument("--force", action="store_true", help="allow a version older than the devices' active one")
    p.add_argument("--wait", action="store_true",
                   help="exit 0 only when every targeted device committed (1 otherwise, or on --timeout)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to serve and watch (default 900)")
    p.add_argument("--expires-in", default="7d", help="how long the document is valid (default 7d)")
    p.add_argument("--url", help="devices fetch the artifact directory from this URL instead of MQTT chunks")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the local checks (to prove that devices refuse a bad artifact)")
    e = p.add_argument_group("experiment", "serve a candidate beside DIR on the devices (A/B split or shadow); "
                             "publishing again without --candidate ends it")
    e.add_argument("--candidate", type=Path, metavar="CANDIDATE_DIR", help="signed candidate artifact directory")
    e.add_argument("--mode", choices=("split", "shadow"), default="split")
    e.add_argument("--weight", type=float, default=0.1, help="share of keys the candidate answers (split)")
    e.add_argument("--split-key", dest="exp_key", default="request_id", metavar="KEY",
                   help="request_id (default) or a feature name: the same key always gets the same variant")
    e.add_argument("--shadow-sample", type=float, default=0.2, help="share of requests also scored (shadow)")
    p.set_defaults(func=publish)

    r = sub.add_parser(
        "rollback", help="send a signed rollback command: devices return to their previous committed version",
        description="Sign a rollback command with the deployment key and send it to the target's cmd topic; "
        "each device swaps its previous committed version back in and reports update_rolled_back.",
        epilog=f"example: edge-runtime rollback --config {EXAMPLE_FLEET} --device pi-01")
    _target_args(r)
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the devices' answers")
    r.set_defaults(func=rollback)

    k = sub.add_parser(
        "publish-keys", help="rotate the keys devices trust: a signed key set, retained for the fleet",
        description="Publish a key-set document (version N+1) listing the public keys devices will trust for "
        "artifacts and for deployments, signed by a key they trust now and by a key of the new set. "
        "Devices persist it before using it, then report keys_rotated (or keys_refused with the reason).",
        epilog=f"example: edge-runtime publish-keys --config {EXAMPLE_FLEET} --version 2 "
        "--artifact-key new/artifact.pub --deployment-key new/deploy.pub --sign-with old/deploy.key "
        "--sign-with new/deploy.key")
    k.add_argument("--config", "-c", required=True, metavar="FLEET_CONFIG", help="fleet config (.toml)")
    k.add_argument("--version", type=int, required=True, help="key-set version, above the devices' current one")
    k.add_argument("--artifact-key", action="append", required=True, type=Path, metavar="PUB",
                   help="public key trusted for artifacts (repeatable)")
    k.add_argument("--deployment-key", action="append", required=True, type=Path, metavar="PUB",
                   help="public key trusted for desired states and commands (repeatable)")
    k.add_argument("--sign-with", action="append", required=True, type=Path, metavar="KEY",
                   help="private key that signs the key set (a current one and a new one)")
    k.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the devices' answers")
    k.set_defaults(func=publish_keys)

    u = sub.add_parser(
        "update-server", help="serve the chunks of every published artifact, long-running",
        description="Serve the artifacts publish registered under the fleet's data_dir to any device that "
        "asks (devices that were offline during a publish, or resume a download later). Logs each "
        "device's update events. Runs until SIGTERM/SIGINT.",
        epilog=f"example: edge-runtime update-server --config {EXAMPLE_FLEET}")
    u.add_argument("--config", "-c", required=True, metavar="FLEET_CONFIG", help="fleet config (.toml)")
    u.set_defaults(func=update_server)


def _key(args: argparse.Namespace, cfg: Any) -> Path:
    from edge_runtime.errors import ConfigError

    key = args.key or cfg.updates.deployment_key
    if key is None:
        raise ConfigError("no deployment key: pass --key DEPLOYMENT_KEY or set [updates] deployment_key",
                          file=cfg.file, key="updates.deployment_key")
    return Path(key)


def _print_event(device: str, ev: dict[str, Any]) -> None:
    extra = ", ".join(f"{k}={ev[k]}" for k in ("version", "to_version", "reason") if ev.get(k) is not None)
    print(f"{time.strftime('%H:%M:%S')} {device}: {ev.get('type')} ({extra})", flush=True)


def publish(args: argparse.Namespace) -> int:
    from edge_runtime.fleet import server as fs
    from edge_runtime.fleet.config import load_fleet_config

    cfg = load_fleet_config(args.config)
    target = fs.target_of(args.device, args.group, args.all)
    key = _key(args, cfg)
    experiment = None
    if args.candidate is not None:
        experiment = {"dir": args.candidate, "mode": args.mode, "weight": args.weight, "key": args.exp_key,
                      "shadow_sample": args.shadow_sample}
    if not args.no_verify:
        for d in (args.dir, *([args.candidate] if args.candidate else [])):
            print(f"checked {d}: {fs.check_artifact(d, cfg.updates.artifact_keys)}")
    doc = fs.desired_document(cfg.fleet.name, target, args.dir, sequence=args.sequence,
                              expires_in_s=fs.parse_duration(args.expires_in), force=args.force, url=args.url,
                              experiment=experiment)
    signed = fs.signed_desired(doc, key)
    uid = fs.update_id(doc)
    srv = fs.UpdateServer(cfg, on_event=lambda d, ev: _print_event(d, ev) if ev.get("update_id") == uid else None)
    srv.register(args.dir)
    if args.candidate is not None:
        srv.register(args.candidate)
    srv.start()
    try:
        time.sleep(1.0)  # retained statuses arrive: which devices are out there
        targets = [args.device] if args.device else srv.known_devices(group=args.group)
        srv.publish(fs.desired_topic(cfg.fleet.name, target), json.dumps(signed).encode(), retain=True)
        print(f"published update {uid}: {doc['artifact']['name']} version {doc['artifact']['version']} to "
              f"{fs.desired_topic(cfg.fleet.name, target)} (sequence {doc['sequence']}, expires {doc['expires']}); "
              f"waiting for {len(targets)} device(s): {', '.join(targets) or 'none online'}", flush=True)

        def done() -> bool:
            return all(uid in srv.devices.get(d, fs.DeviceView()).outcome for d in targets)

        finished = srv.wait_for(done, args.timeout)
        outcomes = {d: srv.devices.get(d, fs.DeviceView()).outcome.get(uid, "no answer") for d in targets}
    finally:
        srv.stop()
    for d, o in outcomes.items():
        print(f"{d}: {o}")
    print(f"served {srv.chunks_sent} chunks ({srv.bytes_sent:,} bytes)"
          + ("" if finished else f"; stopped after --timeout {args.timeout:.0f} s"))
    if args.wait:
        return 0 if finished and all(o == "committed" for o in outcomes.values()) else 1
    return 0


def _send_and_collect(cfg: Any, topic: str, payload: dict[str, Any], *, retain: bool, device: str | None,
                      group: str | None, answer: Callable[[dict[str, Any]], bool], timeout: float,
                      what: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Publish one signed document, then wait until every targeted device (online ones, by their
    retained status) has answered it: (targets, device -> its answer event)."""
    from edge_runtime.fleet import server as fs

    answers: dict[str, dict[str, Any]] = {}

    def on_event(dev: str, ev: dict[str, Any]) -> None:
        if answer(ev):
            answers[dev] = ev
            _print_event(dev, ev)

    srv = fs.UpdateServer(cfg, on_event=on_event)
    srv.start()
    try:
        time.sleep(1.0)  # retained statuses arrive: which devices are out there
        targets = [device] if device else srv.known_devices(group=group)
        srv.publish(topic, json.dumps(payload).encode(), retain=retain)
        print(f"sent {what} to {topic}; waiting for {len(targets)} device(s)", flush=True)
        srv.wait_for(lambda: all(d in answers for d in targets), timeout)
    finally:
        srv.stop()
    for d in targets:
        if d not in answers:
            print(f"{d}: no answer within {timeout:.0f} s")
    return targets, answers


def rollback(args: argparse.Namespace) -> int:
    from edge_runtime.fleet import server as fs
    from edge_runtime.fleet.config import load_fleet_config

    cfg = load_fleet_config(args.config)
    target = fs.target_of(args.device, args.group, args.all)
    cmd = fs.rollback_command(cfg.fleet.name, target, _key(args, cfg), sequence=args.sequence)
    targets, answers = _send_and_collect(
        cfg, fs.cmd_topic(cfg.fleet.name, target), cmd, retain=False, device=args.device, group=args.group,
        answer=lambda ev: ev.get("cmd_id") == cmd["id"], timeout=args.timeout, what=f"rollback {cmd['id']}")
    return 0 if all(answers.get(d, {}).get("type") == "rollback_done" for d in targets) else 1


def publish_keys(args: argparse.Namespace) -> int:
    from edge_runtime.fleet import server as fs
    from edge_runtime.fleet.config import load_fleet_config

    cfg = load_fleet_config(args.config)
    signed = fs.keyset_document(cfg.fleet.name, args.version, args.artifact_key, args.deployment_key, args.sign_with)
    targets, answers = _send_and_collect(
        cfg, fs.keys_topic(cfg.fleet.name), signed, retain=True, device=None, group=None,
        answer=lambda ev: str(ev.get("type", "")).startswith("keys_"), timeout=args.timeout,
        what=f"key set version {args.version}")
    return 0 if all(answers.get(d, {}).get("type") == "keys_rotated" for d in targets) else 1


def update_server(args: argparse.Namespace) -> int:
    from edge_runtime.fleet import server as fs
    from edge_runtime.fleet.config import load_fleet_config

    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    cfg = load_fleet_config(args.config)
    srv = fs.UpdateServer(cfg, on_event=_print_event)
    n = srv.serve_registry()
    srv.start()
    print(f"edge-runtime update-server: serving {n} artifact(s) from {cfg.fleet.data_dir} on "
          f"{cfg.mqtt.host}:{cfg.mqtt.port}", flush=True)
    import signal
    import threading

    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    try:
        while not done.wait(5.0):
            srv.serve_registry()  # pick up what publish registered since
    finally:
        srv.stop()
    print(f"served {srv.chunks_sent} chunks ({srv.bytes_sent:,} bytes)", file=sys.stderr)
    return 0

"""edge-runtime status --config DEVICE_CONFIG"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status", help="show the agent's connection, outbox and model from the device side",
        description="Read the agent's state file and outbox in the data directory: connection state, "
        "outbox depth and age, last acknowledged publish, active model. Works while the agent runs or not.",
        epilog="example: edge-runtime status --config device_configs/raspberry-pi-4.toml --json")
    p.add_argument("--config", "-c", required=True, metavar="DEVICE_CONFIG", help="device config (.toml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def pid_alive(pid: Any) -> bool:
    """Is a process with this pid running (a stale state file's pid is not)?"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(config: str | Path) -> dict[str, Any]:
    from edge_runtime.agent import OUTBOX_FILE, STATE_FILE
    from edge_runtime.config import load_config
    from edge_runtime.store import ModelStore
    from edge_runtime.sync.outbox import read_stats

    cfg = load_config(config)
    data = Path(cfg.device.data_dir)
    state: dict[str, Any] = {}
    try:
        state = json.loads((data / STATE_FILE).read_text())
    except (OSError, ValueError):
        pass
    running = pid_alive(state.get("pid")) and state.get("state") != "stopped"
    active = previous = None
    if (data / "models").is_dir():
        store = ModelStore(data)
        a, p = store.active(), store.previous()
        active = a.to_dict() if a else None
        previous = p.to_dict() if p else None
    return {
        "device": cfg.device.id, "fleet": cfg.device.fleet, "data_dir": str(data),
        "agent": "running" if running else "not running",
        "connection": state.get("state", "never started") if running else "offline",
        "last_state": state.get("state"),
        "since": state.get("since"),
        "broker": f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt else None,
        "last_publish_at": state.get("last_publish_at"),
        "last_error": state.get("last_error"),
        "http": state.get("http") if running else None,
        "state_updated_at": state.get("updated_at"),
        "outbox": read_stats(data / OUTBOX_FILE),
        "active_model": active, "previous_model": previous,
    }


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "never"
    when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when} ({time.time() - ts:.1f} s ago)"


def run(args: argparse.Namespace) -> int:
    s = collect(args.config)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    ob = s["outbox"]
    rows = [
        ("device", f"{s['device']} (fleet {s['fleet']})"),
        ("agent", s["agent"]),
        ("connection", f"{s['connection']} to {s['broker']}" if s["broker"] else "no [mqtt] section"),
        ("since", _ago(s["since"])),
        ("last publish", _ago(s["last_publish_at"])),
        ("last error", s["last_error"] or "none"),
        ("local API", f"http://{s['http']}" if s["http"] else "off"),
        ("outbox", "empty (never started)" if ob is None else
         f"{ob['depth']} message(s), {ob['bytes']:,} bytes, oldest {ob['oldest_age_s'] or 0:.1f} s; "
         f"dropped {ob['dropped']['metrics']} metrics, {ob['dropped']['events']} events"),
        ("active model", "none" if not s["active_model"] else
         f"{s['active_model']['name']} {s['active_model']['version']}"),
        ("previous", "none" if not s["previous_model"] else
         f"{s['previous_model']['name']} {s['previous_model']['version']}"),
    ]
    for k, v in rows:
        print(f"{k:>13}  {v}")
    return 0

"""edge-runtime doctor --config DEVICE_CONFIG"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor", help="check that this device can run: config, disk, artifact, backend, broker, clock, outbox",
        description="Run every check in order and print one line each, OK|WARN|FAIL <check>: <detail and fix>. "
        "Exits 0 when no check failed, 1 otherwise. Connects to the broker as <device id>-doctor, so a running "
        "agent is not disconnected.",
        epilog="example: edge-runtime doctor --config /etc/edge-runtime/device.toml")
    p.add_argument("--config", "-c", required=True, metavar="DEVICE_CONFIG", help="device config (.toml)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker at each step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.doctor import report

    return report(args.config, timeout_s=args.timeout)

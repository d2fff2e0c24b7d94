"""The ``edge-runtime`` command. Each module in ``COMMANDS`` (help order) provides
``add_parser(subparsers)`` and adds its subcommands (``keys``: keygen and sign; ``publish``:
publish, rollback and update-server)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from edge_runtime.errors import EdgeRuntimeError, exit_code

COMMANDS = ["predict", "info", "bench", "serve", "run", "status", "doctor", "keys", "publish", "rollout"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run verified model artifacts on a device.",
        epilog="example: edge-runtime predict artifacts/iris --input rows.csv",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"edge_runtime.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # under systemd the journal stamps each line itself: no second timestamp
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format=stamp + "%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EdgeRuntimeError as exc:
        print(f"edge-runtime {args.command}: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130

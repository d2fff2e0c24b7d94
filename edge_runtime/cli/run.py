"""edge-runtime run --config DEVICE_CONFIG"""

from __future__ import annotations

import argparse
import logging


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run", help="run the device agent: serve the model, report over MQTT, take commands",
        description="Load the device config, install and load the active model, connect to the broker "
        "and report status, metrics and events through the durable outbox until SIGTERM/SIGINT.",
        epilog="example: edge-runtime run --config device_configs/raspberry-pi-4.toml")
    p.add_argument("--config", "-c", required=True, metavar="DEVICE_CONFIG", help="device config (.toml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.agent import Agent
    from edge_runtime.config import load_config

    if args.verbose == 0:  # an agent's log is its diary: INFO by default
        logging.getLogger().setLevel(logging.INFO)
    cfg = load_config(args.config)
    agent = Agent(cfg)
    done = agent.install_signal_handlers()
    try:
        agent.start()
    except BaseException:
        agent.stop()
        raise
    agent.run_until_signal(done)
    return 0

"""Does a stream of hostile commands make the agent grow? A real `edge-runtime run` process, its
resident memory (VmRSS) read from /proc before and after rounds of bad commands on its cmd
topic: 200 KB names, deeply nested JSON, payloads over the 256 KB limit, garbage bytes, unknown
commands. Every command must be answered (one bounded event each) before RSS is read. The
baseline is the same process after a round of harmless pings. Target: flat (the last round adds
under 2 MB over the first).

    python scripts/bench_faults.py [--rounds 4] [--per-round 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_mqtt import vmrss_mb  # noqa: E402  (one reader of /proc/PID/status)


def bad_commands(n: int) -> list[bytes]:
    """(ids are new each call: a command id handled before is, by design, not answered again)"""
    tag = uuid.uuid4().hex[:8]
    kinds = [
        lambda i: json.dumps({"cmd": "x" * 200_000, "id": f"n{tag}{i}"}).encode(),     # a 200 KB name
        lambda i: b"[" * 50_000 + b"]" * 50_000,                                          # nesting
        lambda i: b'{"cmd": "ping", "pad": "' + b"y" * 300_000 + b'"}',                  # over the limit
        lambda i: os.urandom(2048),                                                      # garbage
        lambda i: json.dumps({"cmd": f"reboot-{i}", "id": f"u{tag}{i}", "data": list(range(100))}).encode(),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-round", type=int, default=500)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    from tests.conftest import write_fake_artifact
    from tests.mqtt_broker import Broker, Collector, wait_for, write_agent_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker", persistence=False).start()
        fleet = f"f{uuid.uuid4().hex[:6]}"
        cfg = write_agent_config(work / "device.toml", port=broker.port, artifact=write_fake_artifact(work / "a"),
                                 data_dir=work / "data", fleet=fleet, device="pi-1", outbox_sync="normal")
        col = Collector(broker.port, [f"edge/{fleet}/devices/pi-1/events"]).wait_subscribed()
        log = open(work / "agent.log", "ab")
        agent = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], stdout=log,
                                 stderr=log, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        topic = f"edge/{fleet}/devices/pi-1/cmd"
        rows = []
        try:
            wait_for(lambda: col.json("events"), 30, "agent started")

            def send(payloads: list[bytes]) -> float:
                before = len(col.messages)
                t0 = time.perf_counter()
                for p in payloads:
                    col.client.publish(topic, p, qos=1).wait_for_publish(30)
                wait_for(lambda: len(col.messages) >= before + len(payloads), 60,
                         f"every command answered ({len(col.messages) - before} of {len(payloads)})")
                time.sleep(1.0)
                return time.perf_counter() - t0

            took = send([json.dumps({"cmd": "ping", "id": f"p{i}"}).encode() for i in range(args.per_round)])
            rows.append({"round": "pings (baseline)", "rss_mb": round(vmrss_mb(agent.pid), 1),
                         "seconds": round(took, 1)})
            for r in range(args.rounds):
                took = send(bad_commands(args.per_round))
                rows.append({"round": f"bad commands, round {r + 1}", "rss_mb": round(vmrss_mb(agent.pid), 1),
                             "seconds": round(took, 1)})
            sizes = [len(json.dumps(d)) for d in col.json("events")]
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            col.close()
            broker.stop()
            log.close()
    print(f"# bench_faults: python {sys.version.split()[0]}, {args.per_round} commands per round, "
          f"{os.cpu_count()} cores")
    print("\n| after | agent RSS MB | vs baseline | seconds |")
    print("| --- | ---: | ---: | ---: |")
    base = rows[0]["rss_mb"]
    for r in rows:
        print(f"| {r['round']} | {r['rss_mb']:.1f} | {r['rss_mb'] - base:+.1f} | {r['seconds']:.1f} |")
    growth = rows[-1]["rss_mb"] - rows[1]["rss_mb"]
    print(f"\nlargest answer event: {max(sizes):,} bytes; targets: last round vs first {growth:+.1f} MB "
          f"(< 2 MB: {'ok' if growth < 2 else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""An MQTT inference pipeline in a real agent process against a raw paho round trip, on one
Mosquitto, in one run.

Both sides subscribe to the sensors' topic and publish one answer per message at QoS 1, each in
a process of its own:
  raw paho round trip   a bare paho client that re-publishes every message it receives
                        (no parsing, no model): the most any Python MQTT pipeline can do
  pipeline              `edge-runtime run` with one [[pipelines]] table: JSON object -> row ->
                        the iris ONNX model (micro-batched bursts) -> JSON answer
Measured: a flood (every message sent at once: throughput, messages/s in -> answers/s out) and a
paced stream (latency from the sensor's publish to the answer's arrival, p50/p99), and the
pipeline's own receive -> publish percentiles from its metrics.
Target: pipeline throughput >= 0.5x the raw round trip.

    python scripts/bench_pipelines.py [--messages 10000] [--rate 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import paho.mqtt.client as paho  # noqa: E402
from bench_mqtt import make_onnx_artifact, start_broker  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

ECHO = """
import socket, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port = int(sys.argv[1])
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-echo", protocol=paho.MQTTv5)
c.max_inflight_messages_set(1000)
def on_connect(cl, ud, fl, rc, pr):
    cl.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cl.subscribe("bench/in/+", qos=1)
def on_subscribe(*a):
    print("ready", flush=True)
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = lambda cl, ud, m: cl.publish("bench/out/raw", m.payload, qos=1)
c.connect("127.0.0.1", port)
c.loop_forever()
"""


def _client(name: str, port: int) -> paho.Client:
    import socket

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)

    def on_connect(cl: Any, *a: Any) -> None:
        cl.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Answers:
    """Subscribes to the answers; keeps each arrival time by the message's sequence number."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: dict[int, float] = {}
        self.inside_ms: list[float] = []  # the pipeline's own receive -> publish, from each answer
        self.ready = threading.Event()
        self.c = _client(f"answers-{os.getpid()}", port)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.subscribe(topic, qos=1)
        if not self.ready.wait(10):
            raise RuntimeError("the answer subscriber could not subscribe")

    def _on_message(self, cl: Any, ud: Any, msg: Any) -> None:
        now = time.perf_counter()
        doc = json.loads(msg.payload)
        seq = doc["key"] if "key" in doc else doc["seq"]
        self.arrivals.setdefault(int(seq), now)
        if "latency_ms" in doc:
            self.inside_ms.append(doc["latency_ms"])

    def wait(self, n: int, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while len(self.arrivals) < n:
            if time.monotonic() > end:
                raise TimeoutError(f"{len(self.arrivals)} of {n} answers arrived")
            time.sleep(0.005)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run_side(port: int, n: int, rate: float | None, out_topic: str, features: list[float]) -> dict[str, float]:
    """Send n sensor messages (all at once, or paced at ``rate``/s); time the answers."""
    answers = Answers(port, out_topic)
    sensors = _client(f"sensors-{os.getpid()}", port)
    time.sleep(0.2)
    sent: dict[int, float] = {}
    t0 = time.perf_counter()
    for i in range(n):
        if rate:
            due = t0 + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.001, due - now))
        body = json.dumps({"seq": i, "sepal_length": features[0], "sepal_width": features[1],
                           "petal_length": features[2], "petal_width": features[3], "site": "bench"})
        sent[i] = time.perf_counter()
        sensors.publish(f"bench/in/s{i % 8}", body, qos=1)
    answers.wait(n)
    t_last = max(answers.arrivals.values())
    lat = sorted((answers.arrivals[i] - sent[i]) * 1000 for i in range(n))
    inside = sorted(answers.inside_ms) or [float("nan")]
    sensors.disconnect()
    sensors.loop_stop()
    answers.close()
    return {"rate": n / (t_last - t0), "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (n - 1))],
            "inside_p50_ms": statistics.median(inside), "inside_p99_ms": inside[int(0.99 * (len(inside) - 1))]}


def start_echo(port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", ECHO, str(port)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("the raw echo client did not start")
    return p


def start_agent(work: Path, port: int, artifact: Path) -> tuple[subprocess.Popen[bytes], Path]:
    data = work / "agent-data"
    cfg = work / "agent.toml"
    cfg.write_text(f"""[device]
id = "bench-1"
fleet = "bench"
data_dir = "{data}"
[model]
artifact = "{artifact}"
[mqtt]
host = "127.0.0.1"
port = {port}
metrics_interval_s = 3600
[[pipelines]]
name = "iris"
input = ["bench/in/+"]
key = "seq"
output = "bench/out/pipeline"
batch_max = 64
batch_ms = 2
queue_max = 100000
""")
    log = work / "agent.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as f:
        p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], stdout=f,
                             stderr=f, env=env, cwd=ROOT)
    end = time.monotonic() + 60
    while "pipelines iris on" not in log.read_text(errors="replace"):
        if p.poll() is not None or time.monotonic() > end:
            raise RuntimeError("the agent did not start its pipeline:\n" + log.read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    time.sleep(0.5)  # subscribed
    return p, log


def stop(p: subprocess.Popen[Any]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000, help="messages in the flood")
    ap.add_argument("--paced", type=int, default=2_000, help="messages in the paced run")
    ap.add_argument("--rate", type=float, default=500, help="messages/s in the paced run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}"}
    features = [5.1, 3.5, 1.4, 0.2]
    with tempfile.TemporaryDirectory(prefix="bench-pipelines-") as tmp:
        work = Path(tmp)
        artifact = make_onnx_artifact(work / "iris")
        broker, port = start_broker(work)
        try:
            echo = start_echo(port)
            try:
                res["raw_flood"] = run_side(port, args.messages, None, "bench/out/raw", features)
                res["raw_paced"] = run_side(port, args.paced, args.rate, "bench/out/raw", features)
            finally:
                stop(echo)
            agent, _ = start_agent(work, port, artifact)
            try:
                res["pipe_flood"] = run_side(port, args.messages, None, "bench/out/pipeline", features)
                res["pipe_paced"] = run_side(port, args.paced, args.rate, "bench/out/pipeline", features)
            finally:
                stop(agent)
        finally:
            broker.kill()
            broker.wait()
    raw, pipe = res["raw_flood"], res["pipe_flood"]
    rp, pp = res["raw_paced"], res["pipe_paced"]
    ratio = pipe["rate"] / raw["rate"]
    print(f"\nMQTT inference pipeline, iris ONNX, QoS 1 in and out, mosquitto on loopback ({res['machine']}); "
          f"flood: {args.messages:,} messages sent at once; paced: {args.paced:,} at {args.rate:g}/s\n")
    print("| path | flood: answers/s | vs raw | paced: p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| raw paho round trip (re-publish, no model) | {raw['rate']:,.0f} | 1.00x | {rp['p50_ms']:.1f} "
          f"| {rp['p99_ms']:.1f} |")
    print(f"| pipeline: JSON -> row -> model -> JSON answer | {pipe['rate']:,.0f} | {ratio:.2f}x | "
          f"{pp['p50_ms']:.1f} | {pp['p99_ms']:.1f} |")
    print(f"\nlatencies are sensor publish -> answer received (two broker hops); inside the agent, receive -> "
          f"publish: p50 {pp['inside_p50_ms']:.2f} ms, p99 {pp['inside_p99_ms']:.2f} ms (paced), "
          f"p50 {pipe['inside_p50_ms']:.1f} ms, p99 {pipe['inside_p99_ms']:.1f} ms (flood)")
    print(f"\ntarget: pipeline {ratio:.2f}x raw paho round trip (>= 0.5x: {'ok' if ratio >= 0.5 else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

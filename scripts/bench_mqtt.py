"""The device agent's reporting path against raw paho-mqtt, on one Mosquitto, in one run.

Prints side by side:
  raw paho QoS 1       10,000 x 200 B published and received in one process (the baseline)
  outbox drain         10,000 events queued while offline, drained after the agent connects
                       (published, received by a subscriber, acknowledged and deleted on disk),
                       plus the delay of new events put while the backlog drains
  steady state         events put one by one through agent.event() with an empty backlog,
                       with outbox_sync = "full" (fsync per event) and "normal"
  idle memory          VmRSS of a real `edge-runtime run` process with an ONNX model loaded,
                       next to python alone and python + onnxruntime + the same session
Targets: outbox drain >= 0.5x raw paho; idle agent RSS <= 70 MB (x86_64).

    python scripts/bench_mqtt.py [--messages 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
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

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
CPU_US: dict[str, float] = {}  # process CPU time per message (publisher + subscriber), by path


# -- broker ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


class Counter:
    """A QoS 1 subscriber that timestamps every message."""

    def __init__(self, port: int, topic: str) -> None:
        self.n = 0
        self.last = 0.0
        self.arrivals: dict[str, float] = {}
        self.track = False
        self._ready = threading.Event()
        self._lock = threading.Lock()
        c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("subscriber did not subscribe")
        self.client = c

    def _on_message(self, cl: Any, ud: Any, msg: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            self.n += 1
            self.last = now
            if self.track:
                try:
                    self.arrivals[json.loads(msg.payload)["id"]] = now
                except (ValueError, KeyError):
                    pass

    def wait(self, n: int, timeout: float = 120) -> float:
        end = time.monotonic() + timeout
        while self.n < n:
            if time.monotonic() > end:
                raise TimeoutError(f"received {self.n} of {n}")
            time.sleep(0.001)
        return self.last

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- raw paho baseline ---------------------------------------------------------------------------------
def bench_raw_paho(port: int, n: int, size: int, window: int | None = None) -> float:
    """Publish n messages as fast as paho takes them (window None: paho queues in memory), or
    keeping at most ``window`` unacknowledged, as the outbox publisher does."""
    sub = Counter(port, "bench/raw")
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    acked = [0]
    slots = threading.Semaphore(window or n)
    if window:
        pub.max_inflight_messages_set(window)

    def on_publish(*a: Any) -> None:
        acked[0] += 1
        slots.release()

    pub.on_publish = on_publish
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.2)
    payload = b"x" * size
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(n):
        slots.acquire()
        pub.publish("bench/raw", payload, qos=1)
    t1 = sub.wait(n)
    while acked[0] < n:
        time.sleep(0.001)
    cpu = time.process_time() - c0
    pub.disconnect()
    pub.loop_stop()
    sub.close()
    key = f"raw_window{window}" if window else f"raw{sum(k.startswith('raw') and 'window' not in k for k in CPU_US)}"
    CPU_US[key] = cpu / n * 1e6
    return n / (t1 - t0)


# -- agent -----------------------------------------------------------------------------------------------
def write_config(work: Path, port: int, artifact: Path, sync: str, name: str) -> Path:
    cfg = work / f"{name}.toml"
    cfg.write_text(f"""[device]
id = "bench-{name}"
fleet = "bench"
data_dir = "{work / name}"
[model]
artifact = "{artifact}"
[mqtt]
host = "127.0.0.1"
port = {port}
metrics_interval_s = 3600
heartbeat_interval_s = 3600
outbox_sync = "{sync}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
""")
    return cfg


def padded_event(i: int, size: int) -> dict[str, Any]:
    return {"type": "bench", "n": i, "pad": "x" * max(0, size - 130)}  # ~size bytes with the envelope


def bench_drain(port: int, n: int, size: int, work: Path, artifact: Path) -> dict[str, float]:
    from edge_runtime.agent import OUTBOX_FILE, Agent
    from edge_runtime.config import load_config
    from edge_runtime.sync.mqtt import json_bytes
    from edge_runtime.sync.outbox import Outbox, new_id

    cfg = load_config(write_config(work, port, artifact, "full", "drain"))
    ob = Outbox(Path(cfg.device.data_dir) / OUTBOX_FILE)
    items = []
    for i in range(n):
        mid = new_id()
        doc = {"id": mid, "device": cfg.device.id, "fleet": "bench", "ts": time.time(), **padded_event(i, size)}
        items.append(("events", json_bytes(doc), "event", mid, None))
    for k in range(0, n, 1000):
        ob.put_many(items[k:k + 1000])
    assert ob.depth() == n
    ob.close()

    sub = Counter(port, "edge/bench/devices/bench-drain/events")
    sub.track = True
    agent = Agent(cfg)
    c0 = time.process_time()
    agent.start()  # connects in the background and starts draining at once
    live: list[tuple[str, float]] = []
    stop = threading.Event()

    def producer() -> None:  # new events while the backlog drains: do they wait behind it?
        while not stop.is_set():
            t = time.perf_counter()
            mid = agent.event("live", t=t)
            if mid:
                live.append((mid, t))
            time.sleep(0.02)

    threading.Thread(target=producer, daemon=True).start()
    if not agent.link.wait_connected(10):
        raise RuntimeError("agent did not connect")
    t0 = time.perf_counter() - (time.time() - agent.link.state.since)  # the CONNACK
    end = time.monotonic() + 120
    while agent.outbox.depth() > len(live) + 2 or sub.n < n:
        if time.monotonic() > end:
            raise TimeoutError(f"drained {sub.n} of {n}")
        time.sleep(0.001)
    t1 = time.perf_counter()
    CPU_US["drain"] = (time.process_time() - c0) / n * 1e6
    stop.set()
    drained_at = sub.last
    time.sleep(0.3)
    delays = [sub.arrivals[m] - t for m, t in live if m in sub.arrivals]
    agent.stop()
    sub.close()
    return {"rate": n / (max(drained_at, t1) - t0), "seconds": max(drained_at, t1) - t0,
            "live_events": len(delays), "live_p50_ms": statistics.median(delays) * 1000 if delays else float("nan"),
            "live_max_ms": max(delays) * 1000 if delays else float("nan")}


def bench_steady(port: int, n: int, size: int, work: Path, artifact: Path, sync: str) -> float:
    from edge_runtime.agent import Agent
    from edge_runtime.config import load_config

    cfg = load_config(write_config(work, port, artifact, sync, f"steady-{sync}"))
    sub = Counter(port, f"edge/bench/devices/{cfg.device.id}/events")
    agent = Agent(cfg)
    agent.start()
    if not agent.link.wait_connected(10):
        raise RuntimeError("agent did not connect")
    base = sub.wait(1)  # the agent_started event
    del base
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        agent.event(**padded_event(i, size))
    t1 = sub.wait(n + 1)
    while agent.outbox.depth():
        time.sleep(0.001)
    t1 = max(t1, time.perf_counter())
    CPU_US[f"steady_{sync}"] = (time.process_time() - c0) / n * 1e6
    agent.stop()
    sub.close()
    return n / (t1 - t0)


# -- memory ----------------------------------------------------------------------------------------------
def make_onnx_artifact(d: Path) -> Path:
    """A logistic regression on iris, as an ONNX artifact (skl2onnx; workstation dependency)."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(X, y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    names = [o.name for o in onx.graph.output]
    m = Manifest(name="iris", version="1", backend="onnx", file="model.onnx", sha256=sha256_file(d / "model.onnx"),
                 size_bytes=(d / "model.onnx").stat().st_size, task="classification",
                 inputs=(TensorSpec(onx.graph.input[0].name, "float32", (None, 4)),),
                 outputs=(TensorSpec(names[0], "int64", (None,), "label"),
                          TensorSpec(names[1], "float32", (None, 3), "probabilities")),
                 feature_names=("sepal_length", "sepal_width", "petal_length", "petal_width"),
                 feature_types=("float",) * 4, classes=(0, 1, 2))
    write_manifest(d, m)
    return d


def vmrss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def rss_of(code: str) -> float:
    p = subprocess.Popen([sys.executable, "-c", code + "\nimport sys, time\nprint('ready', flush=True)\n"
                          "time.sleep(30)"], stdout=subprocess.PIPE, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None
    p.stdout.readline()
    time.sleep(0.5)
    try:
        return vmrss_mb(p.pid)
    finally:
        p.kill()
        p.wait()


def bench_memory(port: int, work: Path, artifact: Path) -> dict[str, float]:
    cfg = write_config(work, port, artifact, "full", "idle")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    state = work / "idle" / "agent-state.json"
    try:
        end = time.monotonic() + 30
        while True:
            try:
                if json.loads(state.read_text())["state"] == "connected":
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > end:
                raise RuntimeError("the agent did not connect")
            time.sleep(0.1)
        time.sleep(3)  # idle: a few timer ticks
        agent_rss = vmrss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
    session = (f"import numpy as np, onnxruntime as ort\n"
               f"s = ort.InferenceSession('{artifact / 'model.onnx'}', providers=['CPUExecutionProvider'])\n"
               f"s.run(None, {{s.get_inputs()[0].name: np.zeros((1, 4), np.float32)}})")
    return {"agent": agent_rss, "python": rss_of("pass"), "onnxruntime_session": rss_of(session),
            "session_plus_paho": rss_of(session + "\nimport paho.mqtt.client")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--steady", type=int, default=2_000, help="events for each steady-state run")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        work = Path(tmp)
        artifact = make_onnx_artifact(work / "iris")
        broker, port = start_broker(work)
        try:
            res["raw_paho"] = bench_raw_paho(port, args.messages, args.size)
            res["drain"] = bench_drain(port, args.messages, args.size, work, artifact)
            res["raw_paho_again"] = bench_raw_paho(port, args.messages, args.size)
            res["raw_paho_window"] = bench_raw_paho(port, args.messages, args.size, window=100)
            res["steady_full"] = bench_steady(port, args.steady, args.size, work, artifact, "full")
            res["steady_normal"] = bench_steady(port, args.steady, args.size, work, artifact, "normal")
            res["memory_mb"] = bench_memory(port, work, artifact)
        finally:
            broker.kill()
            broker.wait()
    raw = (res["raw_paho"] + res["raw_paho_again"]) / 2
    d = res["drain"]
    mem = res["memory_mb"]
    ok = lambda c: "ok" if c else "MISSED"  # noqa: E731
    print(f"\nMQTT publishing, {args.size} B payloads, QoS 1, mosquitto on loopback ({res['machine']})\n")
    res["cpu_us_per_msg"] = dict(CPU_US)
    cpu_raw = (CPU_US["raw0"] + CPU_US["raw1"]) / 2
    print("| path | msg/s | vs raw paho | CPU µs/msg (process) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| raw paho-mqtt QoS 1 (mean of 2 runs: {res['raw_paho']:,.0f}, {res['raw_paho_again']:,.0f}) "
          f"| {raw:,.0f} | 1.00x | {cpu_raw:.0f} |")
    rw = res["raw_paho_window"]
    print(f"| raw paho-mqtt QoS 1, at most 100 unacknowledged | {rw:,.0f} | {rw / raw:.2f}x "
          f"| {CPU_US['raw_window100']:.0f} |")
    print(f"| outbox drain of {args.messages:,} queued events | {d['rate']:,.0f} | {d['rate'] / raw:.2f}x "
          f"| {CPU_US['drain']:.0f} |")
    print(f"| steady state, outbox_sync = \"normal\" | {res['steady_normal']:,.0f} | "
          f"{res['steady_normal'] / raw:.2f}x | {CPU_US['steady_normal']:.0f} |")
    print(f"| steady state, outbox_sync = \"full\" (fsync per event) | {res['steady_full']:,.0f} | "
          f"{res['steady_full'] / raw:.2f}x | {CPU_US['steady_full']:.0f} |")
    print(f"\nnew events during the drain: {d['live_events']} delivered, delay p50 {d['live_p50_ms']:.0f} ms, "
          f"max {d['live_max_ms']:.0f} ms (drain took {d['seconds']:.2f} s)")
    print("\n| idle process | VmRSS MB |")
    print("| --- | ---: |")
    print(f"| python alone | {mem['python']:.1f} |")
    print(f"| python + onnxruntime + the iris session | {mem['onnxruntime_session']:.1f} |")
    print(f"| ... + paho-mqtt imported | {mem['session_plus_paho']:.1f} |")
    print(f"| `edge-runtime run` agent, iris ONNX model loaded, connected | {mem['agent']:.1f} |")
    print(f"\ntargets: drain {d['rate'] / raw:.2f}x raw paho (>= 0.5x: {ok(d['rate'] / raw >= 0.5)}); "
          f"idle agent {mem['agent']:.1f} MB (<= 70 MB: {ok(mem['agent'] <= 70)})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

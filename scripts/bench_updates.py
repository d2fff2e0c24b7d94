"""Model updates over MQTT: how long publish -> committed takes against pushing the same bytes raw
through the same broker, how much memory the agent gains while downloading, and what a swap
does to predict latency. Everything runs here, in this run, on loopback.

  transfer   for each size: a signed artifact (a fake-backend model padded to SIZE, so the load
             itself costs nothing and the numbers are the transfer, the hash checks and the swap)
             published to a real agent process (`edge-runtime run`) by the update server; time
             from publish to `update_committed` (probation 0), against the baseline: the same
             bytes in the same chunk size published with paho at QoS 1 to `mosquitto_sub` in
             another process, until it has them all. Targets: within 2x the raw time.
  memory     the agent's VmRSS sampled every 20 ms during the largest download, minus its RSS
             before the publish. Target: under 30 MB growth for 200 MB.
  swap       an in-process Runtime on a real ONNX model (iris logistic regression) predicting in
             a loop while another thread swaps versions every 50 ms; p50/p99 of the calls
             during the swaps against the same loop without swaps. Target: p99 under 2x steady.

    python scripts/bench_updates.py [--sizes 1,50,200] [--chunk-kb 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_mqtt import vmrss_mb  # noqa: E402  (one reader of /proc/PID/status)

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


def padded_artifact(d: Path, version: str, size_mb: float, key: Path) -> Path:
    """A signed fake-backend artifact whose model file is SIZE MB (the model is its first line)."""
    from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
    from edge_runtime.updates.trust import load_private_key, sign_artifact

    d.mkdir(parents=True)
    f = d / "model.json"
    with open(f, "wb") as out:
        out.write(json.dumps({"weights": [[1.0], [1.0]], "input": "x", "outputs": ["value"]}).encode() + b"\n")
        left = int(size_mb * 2**20) - out.tell()
        block = os.urandom(1 << 20)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    write_manifest(d, Manifest(name="bench", version=version, backend="fake", file="model.json",
                               sha256=sha256_file(f), size_bytes=f.stat().st_size, task="regression",
                               inputs=(TensorSpec("x", "float32", (None, 2)),),
                               outputs=(TensorSpec("value", "float32", (None, 1), "value"),),
                               feature_names=("a", "b"), feature_types=("float", "float"),
                               smoke={"rows": [[1.0, 2.0]], "values": [3.0]}))
    sign_artifact(d, load_private_key(key))
    return d


def raw_transfer_s(port: int, path: Path, chunk: int) -> float:
    """The same bytes, same chunk size, QoS 1, paho -> broker -> mosquitto_sub (another process)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    size = path.stat().st_size
    n = -(-size // chunk)
    topic = f"bench/raw/{uuid.uuid4().hex[:8]}"
    sub = subprocess.Popen([MOSQUITTO_SUB, "-p", str(port), "-t", topic, "-q", "1", "-C", str(n), "-N"],
                           stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # subscribed
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(20)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        info = None
        for i in range(n):
            info = c.publish(topic, f.read(chunk), qos=1)
            if i % 8 == 7:
                info.wait_for_publish(30)
    sub.wait(600)
    dt = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return dt


def bench_transfer(work: Path, port: int, sizes: list[float], chunk_kb: int) -> list[dict[str, Any]]:
    from edge_runtime.fleet.config import load_fleet_config
    from edge_runtime.fleet.server import UpdateServer, desired_document, desired_topic, signed_desired, update_id
    from edge_runtime.updates.trust import generate
    from tests.mqtt_broker import toml_value, write_agent_config

    fleet = f"b{uuid.uuid4().hex[:6]}"
    ak, ap = generate(work / "keys", "artifact")
    dk, dp = generate(work / "keys", "deploy")
    v1 = padded_artifact(work / "v1", "1", 0.001, ak)
    dev = write_agent_config(work / "device.toml", port=port, artifact=v1, data_dir=work / "data", device="pi-1",
                             fleet=fleet, updates={"artifact_keys": [ap], "deployment_keys": [dp], "probation_s": 0,
                                                   "probation_min_predictions": 0, "keep_versions": 1},
                             heartbeat_interval_s=1.0)
    (work / "fleet.toml").write_text(
        f'[fleet]\nname = "{fleet}"\ndata_dir = {toml_value(work / "fleet-data")}\n[mqtt]\nhost = "127.0.0.1"\n'
        f"port = {port}\n[updates]\ndeployment_key = {toml_value(dk)}\nchunk_size_kb = {chunk_kb}\n")
    cfg = load_fleet_config(work / "fleet.toml")
    srv = UpdateServer(cfg)
    srv.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(work / "agent.log", "ab")
    agent = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(dev)], stdout=log,
                             stderr=log, env=env, cwd=ROOT)
    results = []
    try:
        _wait(lambda: srv.devices.get("pi-1") and srv.devices["pi-1"].status.get("state") == "online", 30)
        for i, mb in enumerate(sizes):
            art = padded_artifact(work / f"v{i + 2}", str(i + 2), mb, ak)
            srv.serve(art)
            time.sleep(1.0)  # idle before measuring
            rss0 = vmrss_mb(agent.pid)
            doc = desired_document(fleet, {"device": "pi-1"}, art, sequence=None, expires_in_s=3600, force=False)
            uid = update_id(doc)
            peak = [rss0]
            done = threading.Event()

            sampler = threading.Thread(target=_sample_rss, args=(agent.pid, peak, done), daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            srv.publish(desired_topic(fleet, {"device": "pi-1"}), json.dumps(signed_desired(doc, dk)).encode(),
                        retain=True)
            _wait(lambda uid=uid: uid in srv.devices["pi-1"].outcome, 1800)
            took = time.perf_counter() - t0
            done.set()
            sampler.join()
            outcome = srv.devices["pi-1"].outcome[uid]
            raw = raw_transfer_s(port, art / "model.json", chunk_kb * 1024)
            results.append({"mb": mb, "outcome": outcome, "publish_to_committed_s": round(took, 3),
                            "raw_s": round(raw, 3), "ratio": round(took / raw, 2),
                            "rss_before_mb": round(rss0, 1), "rss_growth_mb": round(peak[0] - rss0, 1)})
            shutil.rmtree(art)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        srv.stop()
        log.close()
    return results


def _sample_rss(pid: int, peak: list[float], done: threading.Event) -> None:
    while not done.is_set():
        peak[0] = max(peak[0], vmrss_mb(pid))
        time.sleep(0.02)


def bench_swap(work: Path, seconds: float) -> dict[str, Any]:
    """predict latency in a loop, with and without a swap every 50 ms (real ONNX models)."""
    import warnings

    import edge_runtime
    from scripts.bench_artifacts import diabetes_linear_artifact

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = diabetes_linear_artifact(work / "swap")
    rt = edge_runtime.load(a, threads=1)
    row = np.asarray(rt.manifest.smoke["rows"][0], dtype=np.float32) if rt.manifest.smoke.get("rows") else None
    if row is None:
        row = np.zeros(rt.manifest.n_features, dtype=np.float32)

    def loop(stop: threading.Event) -> np.ndarray:
        out = []
        clock = time.perf_counter_ns
        while not stop.is_set():
            t0 = clock()
            rt.predict(row)
            out.append(clock() - t0)
        return np.asarray(out, dtype=np.int64)

    def run(swapping: bool) -> tuple[np.ndarray, int]:
        stop = threading.Event()
        swaps = [0]

        def swapper() -> None:
            while not stop.wait(0.05):
                old = rt.swap(a)
                swaps[0] += 1
                if old is not None:
                    old.close()

        res: list[np.ndarray] = []
        t = threading.Thread(target=lambda: res.append(loop(stop)))
        t.start()
        s = threading.Thread(target=swapper) if swapping else None
        if s:
            s.start()
        time.sleep(seconds)
        stop.set()
        t.join()
        if s:
            s.join()
        return res[0], swaps[0]

    steady, _ = run(False)
    during, n_swaps = run(True)
    rt.close()
    pct = lambda x, q: float(np.percentile(x, q)) / 1000  # noqa: E731  (µs)
    return {"steady_p50_us": round(pct(steady, 50), 1), "steady_p99_us": round(pct(steady, 99), 1),
            "swap_p50_us": round(pct(during, 50), 1), "swap_p99_us": round(pct(during, 99), 1),
            "swaps": n_swaps, "calls_steady": int(steady.size), "calls_swapping": int(during.size),
            "p99_ratio": round(pct(during, 99) / pct(steady, 99), 2)}


def _wait(pred: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,50,200", help="artifact sizes in MB, comma-separated")
    ap.add_argument("--chunk-kb", type=int, default=128, help="MQTT chunk size (the fleet config's chunk_size_kb)")
    ap.add_argument("--swap-seconds", type=float, default=3.0, help="length of each predict loop in the swap part")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",") if s]
    from tests.mqtt_broker import Broker

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker", persistence=False).start()
        try:
            transfer = bench_transfer(work, broker.port, sizes, args.chunk_kb)
        finally:
            broker.stop()
        swap = bench_swap(work, args.swap_seconds)
    print(f"# bench_updates: python {sys.version.split()[0]}, mosquitto on loopback, chunks of {args.chunk_kb} KB, "
          f"{os.cpu_count()} cores")
    print("\n| artifact | publish -> committed s | raw bytes through the broker s | ratio (target <= 2x) "
          "| agent RSS before MB | RSS growth while downloading MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in transfer:
        print(f"| {r['mb']:g} MB | {r['publish_to_committed_s']:.2f} | {r['raw_s']:.2f} | {r['ratio']:.2f}x "
              f"| {r['rss_before_mb']:.1f} | {r['rss_growth_mb']:.1f} |")
    print("\n| predict, 1 thread | p50 µs | p99 µs | calls |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| steady | {swap['steady_p50_us']} | {swap['steady_p99_us']} | {swap['calls_steady']:,} |")
    print(f"| while swapping every 50 ms ({swap['swaps']} swaps) | {swap['swap_p50_us']} | {swap['swap_p99_us']} "
          f"| {swap['calls_swapping']:,} |")
    big = max(transfer, key=lambda r: r["mb"])
    verdict = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    print(f"\ntargets: transfer {max(r['ratio'] for r in transfer):.2f}x raw at worst (<= 2x: "
          f"{verdict(all(r['ratio'] <= 2 for r in transfer))}); RSS growth {big['rss_growth_mb']:.1f} MB for "
          f"{big['mb']:g} MB (< 30 MB: {verdict(big['rss_growth_mb'] < 30)}); p99 during swaps "
          f"{swap['p99_ratio']:.2f}x steady (< 2x: {verdict(swap['p99_ratio'] < 2)}); outcomes: "
          f"{', '.join(r['outcome'] for r in transfer)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"transfer": transfer, "swap": swap}, indent=2))


if __name__ == "__main__":
    main()

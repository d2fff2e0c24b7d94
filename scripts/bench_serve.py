"""`edge-runtime serve` under wrk, next to a bare ASGI app and the FastAPI-only server, in one run.

Each server runs in its own process on the iris ONNX model (logistic regression, 4 features);
wrk sends `POST /predict` with a fresh random row in every request (a Lua script), after a
warm-up:
  bare ASGI               uvicorn + httptools + uvloop, an app that returns a constant JSON body
                          (no parsing, no model): the ceiling for any Python server here
  edge-runtime serve      the thin predict handler (orjson, no pydantic, no thread hop) in
                          front of the FastAPI app, on uvicorn + httptools + uvloop
  FastAPI only (before)   the same FastAPI app answering /predict itself, on uvicorn's h11 and
                          asyncio as the [http] extra used to install it
Targets: serve >= 5,000 req/s, >= 0.5x the bare app, p99 < 5 ms.

    python scripts/bench_serve.py [--seconds 10] [--connections 8] [--threads 2] [--json out.json]

Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_mqtt import free_port, make_onnx_artifact  # noqa: E402

BARE = """
import sys, uvicorn
BODY = b'{"value":0,"probabilities":{"0":0.98,"1":0.02,"2":0.0},"source":"model","model_version":"1","latency_ms":0.02}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            http="httptools", loop="uvloop")
"""

FASTAPI_ONLY = """
import sys, uvicorn, edge_runtime
from edge_runtime.http.app import create_app
rt = edge_runtime.load(sys.argv[2])
uvicorn.run(create_app(rt), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            http="h11", loop="asyncio")
"""

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  local body = string.format('{"features":{"sepal_length":%.3f,"sepal_width":%.3f,"petal_length":%.3f,'
    .. '"petal_width":%.3f}}', 4 + 4 * math.random(), 2 + 2 * math.random(), 1 + 6 * math.random(),
    0.1 + 2.4 * math.random())
  return wrk.format(nil, "/predict", nil, body)
end
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    wait_port(port, p)
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(port: int, lua: Path, seconds: float, threads: int, connections: int) -> dict[str, float]:
    base = ["wrk", f"-t{threads}", f"-c{connections}", "-s", str(lua), "--latency", f"http://127.0.0.1:{port}"]
    subprocess.run([*base[:-1], "-d1s", base[-1]], capture_output=True, text=True, timeout=60)  # warm-up
    out = subprocess.run([*base[:-1], f"-d{max(1, round(seconds))}s", base[-1]], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError("cannot read wrk's output:\n" + out)
    return {"rps": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="wrk run per server")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        art = make_onnx_artifact(work / "iris")
        lua = work / "rows.lua"
        lua.write_text(LUA)
        servers = {
            "bare": lambda port: [sys.executable, "-c", BARE, str(port)],
            "serve": lambda port: [sys.executable, "-m", "edge_runtime", "serve", str(art), "--port", str(port)],
            "fastapi": lambda port: [sys.executable, "-c", FASTAPI_ONLY, str(port), str(art)],
        }
        for name, cmd in servers.items():
            port = free_port()
            p = start(cmd(port), port)
            try:
                res[name] = wrk(port, lua, args.seconds, args.threads, args.connections)
            finally:
                stop(p)
    bare, serve, old = res["bare"], res["serve"], res["fastapi"]
    ok = lambda c: "ok" if c else "MISSED"  # noqa: E731
    print(f"\nPOST /predict, iris ONNX, a fresh row per request, wrk -t{args.threads} -c{args.connections} "
          f"-d{args.seconds:g}s, server and wrk on one machine ({res['machine']})\n")
    print("| server | req/s | vs bare ASGI | p50 ms | p99 ms | non-2xx |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in (("bare ASGI app, constant body (uvicorn + httptools + uvloop)", bare),
                     ("edge-runtime serve (thin predict handler)", serve),
                     ("FastAPI only, h11 + asyncio (before)", old)):
        print(f"| {label} | {r['rps']:,.0f} | {r['rps'] / bare['rps']:.2f}x | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {r['non_2xx']} |")
    print(f"\nserve is {serve['rps'] / old['rps']:.1f}x the FastAPI-only server")
    print(f"targets: {serve['rps']:,.0f} req/s (>= 5,000: {ok(serve['rps'] >= 5000)}); "
          f"{serve['rps'] / bare['rps']:.2f}x bare (>= 0.5x: {ok(serve['rps'] / bare['rps'] >= 0.5)}); "
          f"p99 {serve['p99_ms']:.2f} ms (< 5 ms: {ok(serve['p99_ms'] < 5)})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

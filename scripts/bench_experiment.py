"""What an on-device experiment costs the caller: predict latency with no experiment, with an A/B
split, and with a shadow candidate, on the same ONNX model in one process, interleaved rounds.

  none            the model alone (the baseline, measured in the same run)
  split 10%       a candidate serving 10% of request ids (a consistent hash per call)
  shadow 20%      the primary answers; 20% of requests are also scored by the candidate on its
                  own thread, off the answer path
  shadow 100%     every request also scored by the candidate
Target: the caller's latency moves by no more than a few percent with a shadow candidate.

    python scripts/bench_experiment.py [--runs 5000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_mqtt import make_onnx_artifact  # noqa: E402

from edge_runtime.bench.measure import stats_from_ns, time_calls  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import edge_runtime

    with tempfile.TemporaryDirectory(prefix="bench-exp-") as tmp:
        art = make_onnx_artifact(Path(tmp) / "iris")
        rng = np.random.default_rng(0)
        rows = (rng.normal(0, 0.3, size=(4096, 4)) + np.array([5.8, 3.0, 3.8, 1.2])).astype(np.float32)
        setups: dict[str, dict[str, Any] | None] = {
            "none": None, "split 10%": {"mode": "split", "weight": 0.1},
            "shadow 20%": {"mode": "shadow", "shadow_sample": 0.2},
            "shadow 100%": {"mode": "shadow", "shadow_sample": 1.0}}
        best: dict[str, tuple[float, float]] = {}
        runtimes = {}
        for name, exp in setups.items():
            rt = edge_runtime.load(art, threads=1)
            if exp is not None:
                rt.start_experiment(art, **exp)
            runtimes[name] = rt
        for _ in range(args.rounds):
            for name, rt in runtimes.items():
                i = iter(range(10**9))

                def call(rt: Any = rt, i: Any = i) -> Any:
                    k = next(i)
                    return rt.predict(rows[k % 4096], request_id=str(k))

                s = stats_from_ns(time_calls(call, args.runs, warmup=200))
                p50, p99 = s.p50_ms * 1000, s.p99_ms * 1000
                old = best.get(name)
                best[name] = (p50, p99) if old is None or p50 < old[0] else old
                if rt.experiment is not None:
                    rt.experiment.drain()
        shadow = runtimes["shadow 20%"].metrics()["variants"]["agreement"]
        for rt in runtimes.values():
            rt.close()
    base = best["none"][0]
    print(f"\npredict(array) with and without an experiment, iris ONNX, {args.runs:,} calls x {args.rounds} rounds, "
          f"best median ({platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()})\n")
    print("| experiment | median µs | p99 µs | vs none |")
    print("| --- | ---: | ---: | ---: |")
    for name, (p50, p99) in best.items():
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {p50 / base:.2f}x |")
    print(f"\nshadow 20%: {shadow['compared']:,} compared, {shadow['dropped']:,} dropped, "
          f"label agreement {shadow['label_agreement']}")
    ratio = best["shadow 20%"][0] / base
    print(f"target: shadow 20% moves the caller's median by {100 * (ratio - 1):+.1f}% (within a few percent: "
          f"{'ok' if ratio <= 1.05 else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps(best, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

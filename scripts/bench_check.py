"""Does `edge-runtime bench` measure what a bare onnxruntime loop measures?

In one process, on one artifact, alternating rounds of:
  bench:    edge_runtime.bench.runner.bench(...) in backend mode, 1 thread, batch 1 -> its p50
  bare run: onnxruntime.InferenceSession(model.onnx, 1 thread).run(None, feed) in a plain
            perf_counter_ns loop written here, no edge_runtime code -> its p50
  bare same: the call edge_runtime's ONNX backend makes, InferenceSession.run(output_names,
            feed, run_options) with the output names and one RunOptions made once (passing None
            for either costs ~1 µs more per call)
and prints each round, the medians and the ratios. PASS when bench's p50 is within 10% of the
bare loop over the same call; the ratio to the plain run(None, feed) is printed beside it.
Only public onnxruntime APIs are used.

    python scripts/bench_check.py [ARTIFACT_DIR] [--runs 5000] [--rounds 5]

Without ARTIFACT_DIR it builds the iris MLP (64-32) fp32 artifact the tests use.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.bench.runner import BenchSettings, bench  # noqa: E402
from edge_runtime.manifest import read_manifest  # noqa: E402

TOLERANCE = 0.10


def bare_loops_p50_ms(model_file: Path, feed: dict[str, np.ndarray], runs: int, warmup: int) -> tuple[float, float]:
    """p50 of ``run(None, feed)`` and of the backend's ``run(names, feed, options)``, each in its
    own plain loop."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_file), sess_options=so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    options = ort.RunOptions()
    clock = time.perf_counter_ns
    for _ in range(warmup):
        sess.run(None, feed)
    public = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        sess.run(None, feed)
        public[i] = clock() - t0
    for _ in range(warmup):
        sess.run(names, feed, options)
    inner = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        sess.run(names, feed, options)
        inner[i] = clock() - t0
    return float(np.median(public)) / 1e6, float(np.median(inner)) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", nargs="?", help="an ONNX artifact directory (default: build the iris MLP)")
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.artifact:
            art = Path(args.artifact)
        else:
            from scripts.bench_artifacts import iris_mlp_artifacts

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                art = iris_mlp_artifacts(Path(tmp), ("fp32",))["fp32"]
        m = read_manifest(art)
        if m.backend != "onnx":
            print(f"{art} is a {m.backend} artifact; this check compares with onnxruntime", file=sys.stderr)
            return 2
        from edge_runtime.bench.inputs import rows_from_reference

        rows = np.asarray(rows_from_reference(m, 256, seed=0), dtype=np.float32)
        feed = {m.inputs[0].name: rows[:1]}
        settings = BenchSettings(runs=args.runs, warmup=200, threads=(1,), batch_sizes=(1,), rows=256,
                                 keep_samples=False)
        bench_p50, run_p50, c_p50 = [], [], []
        print(f"artifact {art} ({m.name}, {m.quantization.get('mode', 'none')}), {args.runs} runs per round")
        print(f"{'round':>5}  {'bench p50 µs':>12}  {'bare same p50 µs':>16}  {'bare run p50 µs':>15}  "
              f"{'bench/same':>10}  {'bench/run':>9}")
        for r in range(args.rounds):
            report = bench([art], settings)
            b = report.results[0].latency.p50_ms
            pub, inner = bare_loops_p50_ms(art / m.file, feed, args.runs, warmup=200)
            bench_p50.append(b)
            run_p50.append(pub)
            c_p50.append(inner)
            print(f"{r + 1:>5}  {b * 1000:>12.2f}  {inner * 1000:>16.2f}  {pub * 1000:>15.2f}  "
                  f"{b / inner:>10.3f}  {b / pub:>9.3f}")
        b, inner, pub = (float(np.median(x)) for x in (bench_p50, c_p50, run_p50))
        ratio = b / inner
        ok = abs(ratio - 1) <= TOLERANCE
        print(f"median  bench p50 {b * 1000:.2f} µs | bare loop over the backend's call {inner * 1000:.2f} µs "
              f"(ratio {ratio:.3f}) | "
              f"bare run(None, feed) loop {pub * 1000:.2f} µs (ratio {b / pub:.3f})")
        print(f"timer loop overhead {report.timer_overhead_ns:.0f} ns per call (in every number)")
        print(f"PASS: bench's p50 is within {TOLERANCE:.0%} of the bare loop over the same call"
              if ok else f"FAIL: bench's p50 differs from the bare loop over the same call by "
              f"{abs(ratio - 1):.1%} (limit {TOLERANCE:.0%})")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

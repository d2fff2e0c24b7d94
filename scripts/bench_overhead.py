"""What edge_runtime costs on top of the backend, and what it saves against MLflow.

For the same artifact and rows, in one process, prints side by side:
  single row: raw onnxruntime InferenceSession.run vs edge_runtime predict(array) and
              predict(dict), vs mlflow.pyfunc predict on the source model (median and p99)
  batch of 256: the same three as rows/s
and the ratios against the targets (predict(array) <= 1.15x raw at the median, dict <= 1.3x,
predict with every reliability feature on <= 1.3x, mlflow pyfunc >= 30x slower than predict).
"raw" is the public ``InferenceSession.run(output_names, feeds)`` on a row already shaped.
Threads and micro-batching: scripts/bench_reliability.py. TFLite artifacts (raw LiteRT vs
predict, fp32 vs fp16 vs int8): --tflite, or scripts/bench_tflite.py.

    python scripts/bench_overhead.py [--runs 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.bench.measure import stats_from_ns, time_calls


def log_models(workdir: Path, limit: int | None = None) -> list[tuple[str, str, np.ndarray, list[str]]]:
    """Train and log the benchmark models; return (label, model uri, rows, feature names)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_iris, load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    out = []
    iris = load_iris(as_frame=True)
    wine = load_wine(as_frame=True)
    cancer = load_breast_cancer(as_frame=True)
    cancer_X = cancer.data.rename(columns=lambda c: c.replace(" ", "_"))
    wine_X = wine.data.rename(columns=lambda c: c.replace("/", "_"))
    specs = [
        ("logistic regression (wine, 13 features)", wine_X, wine.target,
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
        ("random forest 100 (iris)", iris.data, iris.target,
         RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0)),
        ("MLP 64-32 (breast cancer, 30 features)", cancer_X, cancer.target,
         make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=0))),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, X, y, est in specs[:limit]:
            est.fit(X, y)
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(est, name="model", input_example=X.head(3),
                                                signature=infer_signature(X, est.predict(X)),
                                                serialization_format="cloudpickle")
            out.append((label, info.model_uri, X.to_numpy(dtype=np.float32), list(X.columns)))
    return out


def pct(samples: np.ndarray) -> tuple[float, float]:
    s = stats_from_ns(samples)
    return s.p50_ms * 1000, s.p99_ms * 1000  # microseconds


def bench_model(label: str, uri: str, X: np.ndarray, names: list[str], workdir: Path, runs: int) -> dict[str, Any]:
    import mlflow
    import onnxruntime as ort
    import pandas as pd

    import edge_runtime
    from converters import convert

    art = workdir / f"art-{abs(hash(uri))}"
    convert(uri, format="onnx", quantize="none", out=art)
    rt = edge_runtime.load(art, threads=1)
    m = rt.manifest
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(art / m.file), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    row = X[7].copy()
    row2d = row.reshape(1, -1)
    row_dict = {n: float(v) for n, v in zip(names, row, strict=True)}
    pyfunc = mlflow.pyfunc.load_model(uri)
    row_df = pd.DataFrame([row_dict])
    batch = X[np.arange(256) % len(X)]
    batch_df = pd.DataFrame(batch, columns=names)

    # every reliability feature on: metrics, breaker, fallback (last good), drift, a cache miss on
    # every call (distinct rows) and prediction-log sampling at 1%
    rt_all = edge_runtime.load(art, threads=1, fallback_last_good=True, cache_size=4096,
                               log_path=str(workdir / f"pred-{abs(hash(uri))}.jsonl"), log_sample_rate=0.01)
    n_all = runs + max(50, runs // 20) + 10
    rows_all = np.ascontiguousarray(X[np.arange(n_all) % len(X)] * (1 + 1e-4 * np.arange(n_all)[:, None]),
                                    dtype=np.float32)
    next_all = itertools.count().__next__

    res: dict[str, Any] = {"model": label, "single_us": {}, "batch_rows_per_s": {}}
    ro = ort.RunOptions()
    single = {
        "raw onnxruntime run": lambda: sess.run(out_names, {in_name: row2d}),
        "raw onnxruntime run, one RunOptions reused": lambda: sess.run(out_names, {in_name: row2d}, ro),
        "edge predict(array)": lambda: rt.predict(row),
        "edge predict(dict)": lambda: rt.predict(row_dict),
        "edge predict(array), all features on": lambda: rt_all.predict(rows_all[next_all()]),
        "mlflow pyfunc predict": lambda: pyfunc.predict(row_df),
    }
    for name, fn in single.items():
        n = runs if "mlflow" not in name else max(200, runs // 10)
        res["single_us"][name] = pct(time_calls(fn, n, warmup=max(50, n // 20)))
    batched = {
        "raw onnxruntime run": lambda: sess.run(out_names, {in_name: batch}),
        "edge predict_batch(array)": lambda: rt.predict_batch(batch),
        "mlflow pyfunc predict": lambda: pyfunc.predict(batch_df),
    }
    for name, fn in batched.items():
        s = stats_from_ns(time_calls(fn, max(50, runs // 20), warmup=10), batch_size=256)
        res["batch_rows_per_s"][name] = 256 * 1000 / s.p50_ms
    res["all_on_cache_hits"] = rt_all.metrics()["cache"]["hits"]  # 0: every call was a miss
    rt.close()
    rt_all.close()
    return res


def report(results: list[dict[str, Any]]) -> None:
    for r in results:
        single = r["single_us"]
        raw = single["raw onnxruntime run"][0]
        pred = single["edge predict(array)"][0]
        print(f"\n## {r['model']}\n")
        print("| single row | median µs | p99 µs | vs raw onnxruntime |")
        print("| --- | ---: | ---: | ---: |")
        for name, (p50, p99) in single.items():
            print(f"| {name} | {p50:.1f} | {p99:.1f} | {p50 / raw:.2f}x |")
        print("\n| batch of 256 | rows/s (median) | vs raw |")
        print("| --- | ---: | ---: |")
        braw = r["batch_rows_per_s"]["raw onnxruntime run"]
        for name, rps in r["batch_rows_per_s"].items():
            print(f"| {name} | {rps:,.0f} | {rps / braw:.2f}x |")
        dct = single["edge predict(dict)"][0]
        allon = single["edge predict(array), all features on"][0]
        mlf = single["mlflow pyfunc predict"][0]
        verdict = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
        print(f"\ntargets: predict(array) {pred / raw:.2f}x raw (<= 1.15x: {verdict(pred / raw <= 1.15)}); "
              f"predict(dict) {dct / raw:.2f}x (<= 1.3x: {verdict(dct / raw <= 1.3)}); "
              f"all features on {allon / raw:.2f}x (<= 1.3x: {verdict(allon / raw <= 1.3)}); "
              f"mlflow pyfunc {mlf / pred:.0f}x slower than predict (>= 30x: {verdict(mlf / pred >= 30)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3000, help="timed single-row calls per variant")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--tflite", action="store_true",
                    help="also run scripts/bench_tflite.py: raw LiteRT vs predict on .tflite artifacts, fp32/fp16/int8")
    ap.add_argument("--models", type=int, default=None, help="benchmark only the first N models (smoke runs)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = [bench_model(label, uri, X, names, work, args.runs)
                   for label, uri, X, names in log_models(work, args.models)]
    import onnxruntime

    print(f"# bench_overhead: python {sys.version.split()[0]}, onnxruntime {onnxruntime.__version__}, "
          f"{os.cpu_count()} cores, 1 inference thread")
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.tflite:
        import subprocess

        subprocess.run([sys.executable, str(Path(__file__).with_name("bench_tflite.py")), "--runs", str(args.runs)],
                       check=True)


if __name__ == "__main__":
    main()

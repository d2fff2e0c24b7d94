"""TFLite artifacts: raw LiteRT against edge_runtime on the same file, and the quantization modes
side by side. Everything is measured in this one process and run; nothing is copied from elsewhere.

For each model (a Keras MLP on iris, a Keras CNN on load_digits images, a scikit-learn MLP 64-32
on breast cancer converted through its Keras equivalent), each mode (fp32, fp16, dynamic int8,
static int8) is converted with edge-convert's Python API, then timed on one row, one thread:

  raw LiteRT   Interpreter.set_tensor + invoke + get_tensor (the public API; the baseline)
  backend      edge_runtime's LiteRT backend run() on prepared feeds
  predict      edge_runtime Runtime.predict(row) (validation, backend, decoding, metrics)
  onnxruntime  InferenceSession.run on the same model converted with --format onnx (fp32 only)

plus file size, agreement with the source model on held-out rows, and predict_batch rows/s for
256 rows. Rounds are interleaved and each variant keeps its best median, so background load hits
every variant alike. Target: predict within 1.3x of raw LiteRT at the median.

    python scripts/bench_tflite.py [--runs 3000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from edge_runtime.bench.measure import stats_from_ns, time_calls

MODES = ("none", "fp16", "dynamic", "static")
LABEL = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic int8", "static": "static int8"}


def train_and_log(work: Path, limit: int = 3) -> list[dict[str, Any]]:
    """Train the benchmark models, log them to a local MLflow store; return their descriptions."""
    import keras
    import mlflow
    import mlflow.sklearn
    import mlflow.tensorflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    keras.utils.set_random_seed(0)
    out = []

    def save_rows(name: str, X: np.ndarray, cols: list[str]) -> Path:
        path = work / f"{name}.csv"
        np.savetxt(path, X, delimiter=",", header=",".join(cols), comments="")
        return path

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    mlp = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(3, activation="softmax")])
    mlp.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    for _ in range(100):
        mlp.train_on_batch(X, y)
    with mlflow.start_run():
        info = mlflow.tensorflow.log_model(mlp, name="model", pip_requirements=[],
                                           signature=infer_signature(X[:5], mlp.predict(X[:5], verbose=0)))
    cols = [f"x{i}" for i in range(4)]
    out.append({"label": "Keras MLP 16 (iris, 4 features)", "uri": info.model_uri, "X": X,
                "want": mlp.predict(X, verbose=0).argmax(1), "csv": save_rows("iris", X, cols)})
    if len(out) >= limit:
        return out

    d = load_digits()
    imgs = (d.images / 16.0).astype(np.float32)[..., None]
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                            keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    cnn.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    for _ in range(3):
        cnn.fit(imgs, d.target, epochs=1, batch_size=64, verbose=0)
    with mlflow.start_run():
        info = mlflow.tensorflow.log_model(cnn, name="model", pip_requirements=[],
                                           signature=infer_signature(imgs[:5], cnn.predict(imgs[:5], verbose=0)))
    flat = imgs.reshape(len(imgs), -1)
    out.append({"label": "Keras CNN conv16-dense32 (digits 8x8)", "uri": info.model_uri, "X": flat,
                "want": cnn.predict(imgs, verbose=0).argmax(1),
                "csv": save_rows("digits", flat, [f"x{i}" for i in range(64)])})
    if len(out) >= limit:
        return out

    c = load_breast_cancer()
    Xc = c.data.astype(np.float32)
    Xtr, _, ytr, _ = train_test_split(Xc, c.target, test_size=0.3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=0)).fit(Xtr, ytr)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(sk, name="model", pip_requirements=[], serialization_format="cloudpickle",
                                        signature=infer_signature(Xc[:5], sk.predict(Xc[:5])))
    out.append({"label": "scikit-learn MLP 64-32 (breast cancer, 30 features)", "uri": info.model_uri, "X": Xc,
                "want": sk.predict(Xc), "csv": save_rows("cancer", Xc, [f"x{i}" for i in range(30)])})
    return out


def _raw_litert(path: Path, row: np.ndarray) -> tuple[Callable[[], Any], Callable[[np.ndarray], Any]]:
    """The public LiteRT API a user would write: one-row call, and a batch call (resized)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    x = row.reshape(1, -1)
    if i["dtype"] != np.float32:  # int8 I/O: the caller quantizes once, outside the timed call
        s, z = i["quantization"]
        x = np.clip(np.rint(x / s) + z, -128, 127).astype(i["dtype"])
    idx, oidx = i["index"], o["index"]
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor

    def one() -> Any:
        set_tensor(idx, x)
        invoke()
        return get_tensor(oidx)

    batch_it = Interpreter(model_path=str(path), num_threads=1)

    def batch(rows: np.ndarray) -> Any:
        batch_it.set_tensor(i["index"], rows)
        batch_it.invoke()
        return batch_it.get_tensor(o["index"])

    batch_it.resize_tensor_input(i["index"], [256, row.size])
    batch_it.allocate_tensors()
    return one, batch


def _best_medians(fns: dict[str, Callable[[], Any]], runs: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Interleaved rounds; each variant keeps its best (median, p99) in µs."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            s = stats_from_ns(time_calls(fn, runs, warmup=max(50, runs // 20)))
            cur = (s.p50_ms * 1000, s.p99_ms * 1000)
            if name not in best or cur[0] < best[name][0]:
                best[name] = cur
    return best


def bench(model: dict[str, Any], work: Path, runs: int, rounds: int,
          modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    import onnxruntime as ort

    import converters

    X, want = model["X"], model["want"]
    row = X[7].copy()
    batch = X[np.arange(256) % len(X)].astype(np.float32)
    res: dict[str, Any] = {"model": model["label"], "modes": {}}
    for mode in modes:
        out = work / f"{abs(hash(model['uri']))}-{mode}"
        try:
            report = converters.convert(model["uri"], format="tflite", quantize=mode, out=out,
                                        calibration_data=model["csv"], max_accuracy_drop=0.05, version="1")
        except Exception as exc:  # report the mode that failed, keep benchmarking the rest
            res["modes"][mode] = {"error": str(exc).splitlines()[0]}
            continue
        res["modes"][mode] = _bench_artifact(report, X, want, row, batch, runs, rounds)
    # the same model on ONNX Runtime (fp32), for scale
    try:
        onx = converters.convert(model["uri"], format="onnx", quantize="none", out=work / "onnx-ref",
                                 calibration_data=model["csv"], version="1")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onx.out / "model.onnx"), so, providers=["CPUExecutionProvider"])
        name, x1 = sess.get_inputs()[0].name, row.reshape(1, -1)
        res["onnxruntime_us"] = _best_medians({"ort": lambda: sess.run(None, {name: x1})}, runs, rounds)["ort"]
        res["onnx_bytes"] = onx.manifest.size_bytes
    except Exception as exc:  # e.g. tf2onnx missing: the TFLite table still stands
        res["onnxruntime_error"] = str(exc).splitlines()[0]
    import shutil

    shutil.rmtree(work / "onnx-ref", ignore_errors=True)
    return res


def _bench_artifact(report: Any, X: np.ndarray, want: np.ndarray, row: np.ndarray, batch: np.ndarray,
                    runs: int, rounds: int) -> dict[str, Any]:
    import edge_runtime

    rt = edge_runtime.load(report.out, threads=1)
    be = rt._model.backend  # the backend alone, to split the cost
    feeds = {be.inputs()[0].name: row.reshape(1, -1)}
    raw_one, raw_batch = _raw_litert(report.out / "model.tflite", row)
    times = _best_medians({"raw LiteRT": raw_one, "edge backend.run": lambda: be.run(feeds),
                           "edge predict(array)": lambda: rt.predict(row)}, runs, rounds)
    agree = float((np.array([p.value for p in rt.predict_batch(X)]) == want).mean())
    bt = {}
    batch_fns = {"raw LiteRT": lambda: raw_batch(batch), "edge predict_batch": lambda: rt.predict_batch(batch)}
    for name, fn in batch_fns.items():
        s = stats_from_ns(time_calls(fn, max(30, runs // 50), warmup=5), batch_size=256)
        bt[name] = 256 * 1000 / s.p50_ms
    rt.close()
    return {"bytes": report.manifest.size_bytes, "agreement": agree, "single_us": times, "batch_rows_per_s": bt}


def report(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n## {r['model']}\n")
        print("| mode | bytes | raw LiteRT µs | backend.run µs | predict µs | predict / raw | agreement | "
              "batch 256 rows/s (raw / predict_batch) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        fp32 = r["modes"].get("none", {})
        for mode, m in r["modes"].items():
            if "error" in m:
                print(f"| {LABEL[mode]} | failed: {m['error'][:80]} | | | | | | |")
                continue
            t = m["single_us"]
            raw, run, pred = t["raw LiteRT"][0], t["edge backend.run"][0], t["edge predict(array)"][0]
            size = f"{m['bytes']:,}"
            if "bytes" in fp32 and mode != "none":
                size += f" ({m['bytes'] / fp32['bytes']:.2f}x)"
            b = m["batch_rows_per_s"]
            print(f"| {LABEL[mode]} | {size} | {raw:.1f} | {run:.1f} | {pred:.1f} | {pred / raw:.2f}x | "
                  f"{m['agreement']:.4f} | {b['raw LiteRT']:,.0f} / {b['edge predict_batch']:,.0f} |")
        if "onnxruntime_us" in r and "single_us" in fp32:
            ort_us = r["onnxruntime_us"][0]
            raw = fp32["single_us"]["raw LiteRT"][0]
            print(f"\nsame model on onnxruntime (fp32, {r['onnx_bytes']:,} bytes): InferenceSession.run "
                  f"{ort_us:.1f} µs = {ort_us / raw:.1f}x raw LiteRT")
        slower = [LABEL[k] for k, m in r["modes"].items() if k != "none" and "single_us" in m and "single_us" in fp32
                  and m["single_us"]["raw LiteRT"][0] > fp32["single_us"]["raw LiteRT"][0] * 1.05]
        if slower:
            print(f"not faster than fp32 here: {', '.join(slower)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3000, help="timed single-row calls per variant and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each variant keeps its best")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--models", type=int, default=3, help="benchmark only the first N models (smoke runs)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    args = ap.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes takes a comma-separated subset of {','.join(MODES)}")
    import ai_edge_litert.interpreter  # noqa: F401 - fail early without the [tflite] extra

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = train_and_log(work, max(1, args.models))
        results = [bench(m, work, args.runs, args.rounds, modes) for m in models]
    import importlib.metadata as md

    print(f"# bench_tflite: python {sys.version.split()[0]}, ai-edge-litert {md.version('ai-edge-litert')}, "
          f"tensorflow {md.version('tensorflow-cpu')}, {os.cpu_count()} cores, 1 inference thread")
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Convert every supported scikit-learn estimator kind through every quantization mode and print
size, agreement with the sklearn model and single-row latency, next to the fp32 artifact and
sklearn's own predict measured in the same run.

    python scripts/convert_matrix.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def estimators(quick: bool) -> list[tuple[str, str, Any]]:
    from sklearn import ensemble, linear_model, neighbors, neural_network, pipeline, preprocessing, svm, tree

    rows = [
        ("cls", "LogisticRegression", linear_model.LogisticRegression(max_iter=2000)),
        ("cls", "SVC", svm.SVC(probability=True, random_state=0)),
        ("cls", "LinearSVC", svm.LinearSVC()),
        ("cls", "KNeighbors", neighbors.KNeighborsClassifier()),
        ("cls", "DecisionTree", tree.DecisionTreeClassifier(random_state=0)),
        ("cls", "RandomForest(100)", ensemble.RandomForestClassifier(100, random_state=0)),
        ("cls", "GradientBoosting", ensemble.GradientBoostingClassifier(random_state=0)),
        ("cls", "HistGradientBoosting", ensemble.HistGradientBoostingClassifier(random_state=0)),
        ("cls", "MLP(64,32)", neural_network.MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=2000,
                                                          random_state=0)),
        ("cls", "Scaler+MLP(64,32)", pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                            neural_network.MLPClassifier(
                                                                hidden_layer_sizes=(64, 32), max_iter=2000,
                                                                random_state=0))),
        ("reg", "Ridge", linear_model.Ridge()),
        ("reg", "SVR", svm.SVR()),
        ("reg", "RandomForest(100)", ensemble.RandomForestRegressor(100, random_state=0)),
        ("reg", "HistGradientBoosting", ensemble.HistGradientBoostingRegressor(random_state=0)),
        ("reg", "MLP(64,32)", neural_network.MLPRegressor(hidden_layer_sizes=(64, 32), max_iter=3000,
                                                          random_state=0, learning_rate_init=0.01)),
    ]
    return [r for r in rows if r[1] in ("LogisticRegression", "MLP(64,32)")] if quick else rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two estimators only")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import mlflow.sklearn
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.model_selection import train_test_split

    import converters
    from edge_runtime.bench.measure import stats_from_ns, time_calls
    from edge_runtime.errors import ConversionError

    data = {"cls": load_breast_cancer(return_X_y=True, as_frame=True), "reg": load_diabetes(return_X_y=True,
                                                                                            as_frame=True)}
    out_rows = []
    print(f"{'task':<4} {'estimator':<22} {'mode':<8} {'bytes':>9} {'x fp32':>6} {'agree':>7} {'drop':>7} "
          f"{'p50 µs':>7} {'sklearn µs':>10}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for task, label, est in estimators(args.quick):
            X, y = data[task]
            Xtr, Xte, ytr, _ = train_test_split(X, y, test_size=0.5, random_state=0)
            est.fit(Xtr, ytr)
            mdir = Path(tmp) / f"{task}-{label}"
            mlflow.sklearn.save_model(est, str(mdir), input_example=Xtr.iloc[:5], pip_requirements=[],
                                      serialization_format="cloudpickle")
            rows_csv = Path(tmp) / f"{task}.csv"
            Xte.to_csv(rows_csv, index=False)
            one = Xte.iloc[:1]
            sk = stats_from_ns(time_calls(lambda: est.predict(one), 50, 5)).p50_ms * 1000  # noqa: B023
            base = None
            for mode in ("none", "fp16", "dynamic", "static"):
                t0 = time.perf_counter()
                try:
                    rep = converters.convert(mdir, quantize=mode, out=Path(tmp) / f"a-{task}-{label}-{mode}",
                                             calibration_data=rows_csv, max_accuracy_drop=0.05,
                                             candidate_timeout=120)
                except ConversionError as exc:
                    print(f"{task:<4} {label:<22} {mode:<8} {'-':>9} {'-':>6} {'-':>7} {'-':>7} {'-':>7} "
                          f"{sk:>10.1f}  {str(exc)[:90]}")
                    out_rows.append({"task": task, "estimator": label, "mode": mode, "error": str(exc)})
                    continue
                c = rep.candidates[0]
                size = rep.manifest.size_bytes
                base = size if mode == "none" else base
                ratio = size / base if base else float("nan")
                p50 = c["p50_ms"] * 1000
                print(f"{task:<4} {label:<22} {mode:<8} {size:>9,} {ratio:>6.2f} {rep.parity['agreement']:>7.4f} "
                      f"{rep.parity['drop']:>7.4f} {p50:>7.1f} {sk:>10.1f}  {time.perf_counter() - t0:.1f}s")
                out_rows.append({"task": task, "estimator": label, "mode": mode, "bytes": size, "x_fp32": ratio,
                                 "agreement": rep.parity["agreement"], "drop": rep.parity["drop"],
                                 "p50_us": p50, "sklearn_p50_us": sk})
    if args.json:
        Path(args.json).write_text(json.dumps(out_rows, indent=2))
    _ = np
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""bench() on real converted ONNX artifacts: every field present and sane, sweeps, agreement,
accuracy, JSON round trip, the table and the CSV history. (--isolate and --plot: test_bench_cli.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bench.report import CSV_COLUMNS, append_csv, format_table
from edge_runtime.bench.results import BenchReport
from edge_runtime.bench.runner import BenchSettings, bench
from edge_runtime.errors import ConfigError, InvalidInput, ModelLoadError

FAST = {"runs": 40, "warmup": 2, "rows": 64}


def _check_sane(m, settings: BenchSettings) -> None:  # type: ignore[no-untyped-def]
    lat = m.latency
    order = [lat.min_ms, lat.p50_ms, lat.p90_ms, lat.p95_ms, lat.p99_ms, lat.p999_ms, lat.max_ms]
    assert order == sorted(order) and lat.min_ms > 0
    assert lat.min_ms <= lat.mean_ms <= lat.max_ms and lat.std_ms >= 0
    assert lat.runs == settings.runs and m.samples_ns is not None and m.samples_ns.size == settings.runs
    assert lat.batch_size == m.batch_size
    assert lat.rows_per_s == pytest.approx(m.batch_size * lat.inferences_per_s)
    model_file = Path(m.artifact) / "model.onnx"
    assert m.file_size_bytes == model_file.stat().st_size > 0
    assert m.load_ms > m.session_ms > 0 and m.first_ms > 0
    assert m.rss_before_bytes > 20 * 2**20 and m.rss_after_bytes > 20 * 2**20
    assert m.model_added_bytes == m.rss_after_bytes - m.rss_before_bytes
    assert m.peak_rss_bytes >= m.rss_after_bytes and m.peak_is_per_measurement  # Linux
    assert m.backend == "onnx" and m.mode == settings.mode and m.warmup == settings.warmup


def test_one_artifact_every_field_sane(bench_artifacts: dict[str, Path]) -> None:
    s = BenchSettings(**FAST)
    report = bench([bench_artifacts["fp32"]], s)
    assert len(report.results) == 1
    m = report.results[0]
    _check_sane(m, s)
    assert m.label == "iris-fp32" and m.quantization == "none" and m.name == "iris-mlp"
    assert m.agreement is None and m.accuracy is None
    d = report.device
    for key in ("cpu", "cores", "memory_bytes", "os", "python", "onnxruntime", "litert", "threads"):
        assert d[key], key
    assert d["threads"] == [1] and d["onnxruntime"].startswith("onnxruntime ")
    assert 0 < report.timer_overhead_ns < 100_000
    assert any("reference histograms" in n for n in report.notes)


def test_sweep_gives_one_row_per_combination(bench_artifacts: dict[str, Path]) -> None:
    s = BenchSettings(**FAST, threads=(1, 2), batch_sizes=(1, 8))
    report = bench([bench_artifacts["fp32"], bench_artifacts["int8"]], s)
    combos = [(Path(m.artifact).name, m.threads, m.batch_size) for m in report.results]
    assert combos == [(a, t, b) for a in ("iris-fp32", "iris-int8") for t in (1, 2) for b in (1, 8)]
    for m in report.results:
        _check_sane(m, s)
    int8 = [m for m in report.results if m.quantization == "int8"]
    assert all(m.agreement is not None and m.agreement["rows"] == 64 for m in int8)
    assert 0.8 <= int8[0].agreement["label_agreement"] <= 1.0
    assert int8[0].file_size_bytes < report.results[0].file_size_bytes  # int8 weights are smaller


def test_same_artifact_twice_agrees_fully_and_labels_give_accuracy(
        bench_artifacts: dict[str, Path], iris_rows: tuple[list[list[float]], list[int]]) -> None:
    X, y = iris_rows
    rows = np.asarray(X)
    report = bench([bench_artifacts["fp32"], bench_artifacts["fp32"]], BenchSettings(**FAST), rows=rows,
                   labels=y)
    second = report.results[1]
    assert second.agreement == {"rows": 150, "label_agreement": 1.0, "max_abs_diff": 0.0}
    assert second.accuracy is not None and second.accuracy["rows"] == 150
    assert 0.9 < second.accuracy["accuracy"] <= 1.0
    with pytest.raises(InvalidInput, match="149 labels for 150 input rows"):
        bench([bench_artifacts["fp32"]], BenchSettings(**FAST), rows=rows, labels=y[:-1])


def test_predict_mode_duration_and_regression(bench_artifacts: dict[str, Path]) -> None:
    s = BenchSettings(duration_s=0.1, warmup=2, rows=32, mode="predict", batch_sizes=(1, 4))
    report = bench([bench_artifacts["regression"]], s)
    assert [m.batch_size for m in report.results] == [1, 4]
    for m in report.results:
        assert m.mode == "predict" and m.latency.runs >= 2 and m.quantization == "none"
        # every call but the last ended before the deadline, so together they fit in the duration
        assert m.samples_ns[:-1].sum() / 1e9 < 0.1


def test_json_round_trip(bench_artifacts: dict[str, Path]) -> None:
    report = bench([bench_artifacts["fp32"], bench_artifacts["int8"]], BenchSettings(**FAST))
    text = report.to_json()
    back = BenchReport.from_json(text)
    assert back.to_dict() == json.loads(text) == report.to_dict()
    with_samples = BenchReport.from_json(report.to_json(samples=True))
    assert np.array_equal(with_samples.results[0].samples_ns, report.results[0].samples_ns)


def test_bad_settings_and_artifacts(bench_artifacts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        bench([bench_artifacts["fp32"]], BenchSettings(batch_sizes=(0,)))
    with pytest.raises(ModelLoadError, match="no such artifact directory"):
        bench([bench_artifacts["fp32"], tmp_path / "nope"], BenchSettings(**FAST))
    with pytest.raises(ModelLoadError, match="--backend tflite was asked for"):
        bench([bench_artifacts["fp32"]], BenchSettings(**FAST, backend="tflite"))
    with pytest.raises(InvalidInput, match="--input"):
        bench([bench_artifacts["noref"]], BenchSettings(**FAST))
    with pytest.raises(InvalidInput, match="takes features"):
        bench([bench_artifacts["fp32"], bench_artifacts["regression"]], BenchSettings(**FAST),
              rows=np.zeros((3, 4)))


def test_table_and_csv_history(bench_artifacts: dict[str, Path], tmp_path: Path) -> None:
    report = bench([bench_artifacts["fp32"], bench_artifacts["int8"]], BenchSettings(**FAST, threads=(1, 2)))
    table = format_table(report)
    for needle in ("device ", "os ", "software ", "onnxruntime", "threads  intra-op 1,2", "timer loop overhead",
                   "p99.9", "iris-int8", "agree", "ref"):
        assert needle in table, needle
    path = tmp_path / "history.csv"
    assert append_csv(report, path) == 4
    assert append_csv(report, path) == 4
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and list(rows[0]) == CSV_COLUMNS
    assert float(rows[0]["p50_ms"]) == pytest.approx(report.results[0].latency.p50_ms)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="new file"):
        append_csv(report, tmp_path / "other.csv")



def test_time_model_is_what_bench_measures_for_a_loaded_model(bench_artifacts: dict[str, Path]) -> None:
    from edge_runtime.bench.runner import time_model
    from edge_runtime.model import LoadedModel

    model = LoadedModel.open(bench_artifacts["fp32"])
    try:
        rows = np.random.default_rng(0).uniform(0, 5, (10, 4))
        s = time_model(model, rows, runs=25, warmup=2, batch_size=4)
        assert s.runs == 25 and s.batch_size == 4 and 0 < s.min_ms <= s.p50_ms <= s.max_ms
    finally:
        model.close()


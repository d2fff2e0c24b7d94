"""Rows drawn from the manifest's reference histograms; agreement, accuracy and labels files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bench.compare import accuracy, agreement, read_labels
from edge_runtime.bench.inputs import rows_from_reference, take_rows
from edge_runtime.errors import InvalidInput
from edge_runtime.manifest import read_manifest


def test_rows_follow_the_histograms_and_are_deterministic(bench_artifacts: dict[str, Path]) -> None:
    m = read_manifest(bench_artifacts["fp32"])
    rows = rows_from_reference(m, 4000, seed=3)
    assert isinstance(rows, np.ndarray) and rows.shape == (4000, 4)
    assert np.array_equal(rows, rows_from_reference(m, 4000, seed=3))
    assert not np.array_equal(rows, rows_from_reference(m, 4000, seed=4))
    for j, name in enumerate(m.feature_names):
        h = m.reference["features"][name]
        edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"], float)
        assert edges[0] <= rows[:, j].min() and rows[:, j].max() <= edges[-1]
        got = np.histogram(rows[:, j], bins=edges)[0] / 4000
        assert np.abs(got - counts / counts.sum()).max() < 0.05, name


def test_categorical_and_int_features(bench_artifacts: dict[str, Path]) -> None:
    m = read_manifest(bench_artifacts["fp32"])
    names = m.feature_names
    ref = {"features": {names[0]: {"kind": "categorical", "counts": {"1": 3, "2": 1}},
                        names[1]: {"classes": [5, 6], "counts": [0, 10]},
                        names[2]: {"edges": [0.0, 10.0], "counts": [4]},
                        names[3]: {"edges": [1.0, 2.0, 3.0], "counts": [0, 7]}}}
    m2 = replace(m, reference=ref, feature_types=("float", "float", "int", "float"))
    rows = rows_from_reference(m2, 2000)
    assert set(np.unique(rows[:, 0])) == {1.0, 2.0} and 0.65 < (rows[:, 0] == 1).mean() < 0.85
    assert set(np.unique(rows[:, 1])) == {6.0}
    assert np.array_equal(rows[:, 2], np.round(rows[:, 2]))
    assert (rows[:, 3] >= 2.0).all()


def test_no_or_broken_reference_asks_for_input(bench_artifacts: dict[str, Path]) -> None:
    m = read_manifest(bench_artifacts["noref"])
    with pytest.raises(InvalidInput, match=r"no reference histograms.*--input"):
        rows_from_reference(m, 10)
    good = read_manifest(bench_artifacts["regression"])
    name = good.feature_names[0]
    broken = {"features": {**good.reference["features"], name: {"edges": [0, 1], "counts": [1, 2]}}}
    with pytest.raises(InvalidInput, match=f"'{name}'.*k counts and k\\+1 edges"):
        rows_from_reference(replace(good, reference=broken), 10)
    missing = {"features": {k: v for k, v in good.reference["features"].items() if k != name}}
    with pytest.raises(InvalidInput, match=f"'{name}'.*no histogram"):
        rows_from_reference(replace(good, reference=missing), 10)


def test_take_rows_wraps() -> None:
    assert take_rows([1, 2, 3], 2, 4) == [3, 1, 2, 3]
    assert take_rows(np.arange(3).reshape(3, 1), 1, 2).tolist() == [[1], [2]]


def test_agreement_and_accuracy() -> None:
    a = agreement("classification", [0, 1, 2, 1], [0, 1, 1, 1], np.eye(3)[[0, 1, 2, 1]], np.eye(3)[[0, 1, 1, 1]])
    assert a == {"rows": 4, "label_agreement": 0.75, "max_abs_diff": 1.0}
    r = agreement("regression", [1.0, 2.0], [1.5, 2.0])
    assert r["max_abs_diff"] == 0.5 and r["mean_abs_diff"] == 0.25 and r["label_agreement"] is None
    assert accuracy("classification", [0, 1, 2], ["0", "1.0", "1"]) == {"rows": 3, "accuracy": 2 / 3}
    reg = accuracy("regression", [1.0, 3.0], [2.0, 3.0])
    assert reg["mae"] == 0.5 and reg["rmse"] == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError):
        accuracy("classification", [0], [0, 1])


def test_labels_files(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps({"labels": [0, 1, 2]}))
    (tmp_path / "l.csv").write_text("species\n0\n1\n2\n")
    (tmp_path / "l.txt").write_text("setosa\nvirginica\n")
    np.save(tmp_path / "l.npy", np.array([[1.5], [2.5]]))
    assert read_labels(tmp_path / "l.json", "classification") == [0, 1, 2]
    assert read_labels(tmp_path / "l.csv", "classification") == ["0", "1", "2"]
    assert read_labels(tmp_path / "l.txt", "classification") == ["setosa", "virginica"]
    assert read_labels(tmp_path / "l.npy", "regression") == [1.5, 2.5]
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="one column"):
        read_labels(tmp_path / "two.csv", "classification")
    with pytest.raises(InvalidInput, match="cannot read --labels"):
        read_labels(tmp_path / "missing.csv", "classification")

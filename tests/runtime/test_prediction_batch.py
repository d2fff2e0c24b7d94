"""predict_batch returns a lazy sequence that behaves like the list of Predictions it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime import PredictionBatch
from tests.conftest import write_fake_artifact


@pytest.fixture
def clf(tmp_path: Path):
    d = write_fake_artifact(tmp_path / "c", task="classification", weights=[[1.0, -1.0, 0.0], [0.0, 0.5, 1.0]])
    with edge_runtime.load(d) as rt:
        yield rt


def test_rows_match_single_predictions(clf) -> None:
    rows = np.array([[2.0, 0.0], [-1.0, 3.0], [0.0, 0.0], [0.5, -2.0]])
    batch = clf.predict_batch(rows)
    assert isinstance(batch, PredictionBatch) and len(batch) == 4
    for i, p in enumerate(batch):
        single = clf.predict(rows[i])
        assert p.value == single.value
        assert p.probabilities == pytest.approx(single.probabilities)
        assert p.source == "model" and p.model_version == "1"
    assert batch.values == [p.value for p in batch]
    assert batch.probabilities.shape == (4, 3)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_indexing_like_a_list(clf) -> None:
    batch = clf.predict_batch([[2.0, 0.0], [-1.0, 3.0], [0.0, 5.0]])
    as_list = list(batch)
    assert batch[-1].value == as_list[2].value
    assert [p.value for p in batch[1:]] == [p.value for p in as_list[1:]]
    assert batch[-1].probabilities == pytest.approx(as_list[2].probabilities)
    with pytest.raises(IndexError):
        batch[3]
    assert "3 rows" in repr(batch)


def test_regressor_batch_has_no_probabilities(tmp_path: Path) -> None:
    rt = edge_runtime.load(write_fake_artifact(tmp_path / "r", weights=[[2.0], [1.0]]))
    batch = rt.predict_batch([[1.0, 1.0], [2.0, 0.0]])
    assert batch.values == pytest.approx([3.0, 4.0])
    assert batch.probabilities is None and batch[0].probabilities is None

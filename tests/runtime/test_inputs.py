"""Input validation: the caller's mistakes are named precisely and never reach the backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime import InvalidInput
from edge_runtime.errors import BackendError
from tests.conftest import write_fake_artifact


@pytest.fixture
def rt(tmp_path: Path):
    d = write_fake_artifact(tmp_path / "m", features=("tenure", "charges"), weights=[[2.0], [0.5]])
    with edge_runtime.load(d) as runtime:
        yield runtime


def backend_calls(rt) -> int:
    return rt._model.backend.calls


def test_dict_array_and_sequence_agree(rt) -> None:
    expected = 2.0 * 3 + 0.5 * 70.5
    assert rt.predict({"tenure": 3, "charges": 70.5}).value == pytest.approx(expected)
    assert rt.predict(np.array([3.0, 70.5])).value == pytest.approx(expected)
    assert rt.predict([3, 70.5]).value == pytest.approx(expected)
    p = rt.predict({"charges": 70.5, "tenure": 3})  # order of keys does not matter
    assert p.value == pytest.approx(expected) and p.source == "model" and p.model_version == "1"
    assert p.latency_ms > 0


@pytest.mark.parametrize(
    ("row", "feature", "text"),
    [
        ({"tenure": 3}, "charges", "missing"),
        ({"tenure": 3, "charges": 1, "age": 4}, "age", "unknown feature"),
        ({"tenure": "3", "charges": 1.0}, "tenure", "expected a finite number, got str"),
        ({"tenure": None, "charges": 1.0}, "tenure", "expected a finite number, got NoneType"),
        ({"tenure": math.nan, "charges": 1.0}, "tenure", "finite"),
        ({"tenure": 1.0, "charges": math.inf}, "charges", "finite"),
    ],
)
def test_bad_rows_name_the_feature(rt, row, feature: str, text: str) -> None:
    before = backend_calls(rt)
    with pytest.raises(InvalidInput, match=text) as err:
        rt.predict(row)
    assert err.value.feature == feature
    assert feature in str(err.value)
    assert backend_calls(rt) == before  # never reached the backend
    assert rt.metrics()["predictions"]["invalid_input"] >= 1


def test_wrong_width_and_shape(rt) -> None:
    with pytest.raises(InvalidInput, match="expected 2 values"):
        rt.predict([1.0, 2.0, 3.0])
    with pytest.raises(InvalidInput, match="one row"):
        rt.predict(np.ones((2, 2)))
    with pytest.raises(InvalidInput, match="2-D array"):
        rt.predict_batch(np.ones(2))
    with pytest.raises(InvalidInput, match="no rows"):
        rt.predict_batch([])
    with pytest.raises(InvalidInput, match="dict of 2 named features"):
        rt.predict("tenure=3")


def test_batch_forms_and_row_numbers(rt) -> None:
    arr = np.array([[1.0, 2.0], [3.0, 4.0]])
    values = [p.value for p in rt.predict_batch(arr)]
    assert values == pytest.approx([3.0, 8.0])
    dicts = [{"tenure": 1, "charges": 2}, {"tenure": 3, "charges": 4}]
    assert [p.value for p in rt.predict_batch(dicts)] == pytest.approx(values)
    with pytest.raises(InvalidInput) as err:
        rt.predict_batch([{"tenure": 1, "charges": 2}, {"tenure": 3, "charges": "x"}])
    assert err.value.row == 1 and err.value.feature == "charges"
    nan_rows = arr.copy()
    nan_rows[1, 0] = np.nan
    with pytest.raises(InvalidInput) as err:
        rt.predict_batch(nan_rows)
    assert (err.value.row, err.value.feature) == (1, "tenure")


def test_dataframe_is_accepted_when_pandas_is_there(rt) -> None:
    pd = pytest.importorskip("pandas", reason="pandas is optional on devices")
    df = pd.DataFrame({"charges": [2.0, 4.0], "tenure": [1.0, 3.0]})  # columns reordered by name
    assert [p.value for p in rt.predict_batch(df)] == pytest.approx([3.0, 8.0])
    with pytest.raises(InvalidInput, match="missing"):
        rt.predict_batch(df[["charges"]])


def test_classifier_probabilities_are_a_dict_by_class(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "c", task="classification", weights=[[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    rt = edge_runtime.load(d)
    p = rt.predict([2.0, 0.0])
    assert p.value == 0
    assert set(p.probabilities) == {0, 1, 2}
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert p.to_dict()["probabilities"]["0"] == pytest.approx(p.probabilities[0])


# -- any input: an answer or InvalidInput, never anything else ------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = (st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(width=32)
           | st.integers(min_value=-(10**400), max_value=10**400) | st.booleans() | st.none()
           | st.text(max_size=8) | st.binary(max_size=4) | st.lists(st.floats(), max_size=2)
           | st.floats(min_value=1e-320, max_value=1e-300))  # subnormal
_keys = st.sampled_from(["tenure", "charges"]) | st.text(max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.dictionaries(_keys, _values, max_size=4) | st.lists(_values, max_size=4)
       | st.builds(np.array, st.lists(st.floats(width=64), max_size=4)))
def test_any_row_is_answered_or_refused_with_invalid_input(rt, row) -> None:  # type: ignore[no-untyped-def]
    import warnings

    with warnings.catch_warnings():
        # no numpy overflow warning from our input handling leaks to the caller (the model's own
        # arithmetic may overflow on extreme valid rows: that is its output, checked separately)
        warnings.filterwarnings("error", module="edge_runtime.inputs")
        try:
            p = rt.predict(row)
        except InvalidInput as exc:
            assert str(exc) and len(str(exc)) < 400
        except BackendError as exc:  # a valid row whose score overflows float32 (2 x 1.7e38): no fallback here
            assert "non finite output" in str(exc), exc
        else:
            assert p.source == "model" and math.isfinite(p.value)
    assert rt.health()["breaker"] == "closed"  # neither a bad row nor an overflowing score opens it


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_values, min_size=2, max_size=2), min_size=1, max_size=5))
def test_any_batch_is_answered_or_refused_with_invalid_input(rt, rows) -> None:  # type: ignore[no-untyped-def]
    try:
        out = rt.predict_batch(rows)
    except InvalidInput as exc:
        assert str(exc)
    else:
        assert len(out) == len(rows)
    assert rt.health()["breaker"] == "closed"

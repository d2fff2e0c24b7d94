"""Pipelines over named columns: imputers, scalers, one-hot encoders, ColumnTransformer with
string categories. They convert to the "columns" layout (one [N, 1] input per feature)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import InvalidInput

pytestmark = pytest.mark.slow


def _frame(n: int = 400, seed: int = 0) -> tuple[Any, Any, Any]:
    """A churn-like table: numbers with gaps, string categories; labels and a numeric target."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], n)
    region = rng.choice(["north", "south", "east", "west"], n)
    tenure = rng.integers(0, 72, n).astype(float)
    charges = rng.uniform(10, 120, n)
    tenure[rng.random(n) < 0.1] = np.nan  # missing values the imputer fills
    df = pd.DataFrame({"tenure": tenure, "charges": charges, "plan": plan, "region": region})
    score = charges / 40 - np.nan_to_num(tenure, nan=30) / 24 + (plan == "pro") * 1.5 - (region == "east")
    churn = np.where(score + rng.normal(0, 0.3, n) > 0.5, "yes", "no")
    spend = charges * 12 + (plan == "pro") * 200 + np.nan_to_num(tenure, nan=30) * 3
    return df, churn, spend


def _pipeline(final: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
         ["tenure", "charges"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
    ])
    return Pipeline([("pre", pre), ("model", final)])


@pytest.fixture(scope="module")
def churn(store: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression

    df, churn, spend = _frame()
    clf = _pipeline(LogisticRegression(max_iter=1000)).fit(df, churn)
    reg = _pipeline(GradientBoostingRegressor(n_estimators=30, random_state=0)).fit(df, spend)
    data = tmp_path_factory.mktemp("churn") / "rows.csv"
    df.to_csv(data, index=False)
    return {"df": df, "clf": clf, "reg": reg, "data": data,
            "clf_uri": store.log(clf, df, skops_trusted_types=["numpy.dtype"]),
            "reg_uri": store.log(reg, df, skops_trusted_types=["numpy.dtype", "sklearn.tree._tree.Tree"])}


def test_column_transformer_classifier(churn: dict[str, Any], store: Any, tmp_path: Path) -> None:
    import converters

    report = converters.convert(churn["clf_uri"], quantize="none", out=tmp_path / "clf",
                                calibration_data=churn["data"], tracking_uri=store.uri)
    m = report.manifest
    assert m.input_layout == "columns" and [s.name for s in m.inputs] == ["tenure", "charges", "plan", "region"]
    assert m.feature_types == ("float", "float", "string", "string")
    assert set(m.extra["missing_ok"]) == {"tenure", "charges"}
    assert m.classes == ("no", "yes")
    assert m.reference["features"]["plan"]["kind"] == "categorical"
    assert set(m.reference["prediction"]["counts"]) <= {"no", "yes"}
    df = churn["df"]
    rt = edge_runtime.load(report.out)
    preds = rt.predict_batch(df)  # a DataFrame with NaN in tenure
    assert [p.value for p in preds] == list(churn["clf"].predict(df))
    proba = np.array([[p.probabilities["no"], p.probabilities["yes"]] for p in preds])
    assert np.abs(proba - churn["clf"].predict_proba(df)).max() < 1e-4
    one = rt.predict({"tenure": None, "charges": 50.0, "plan": "pro", "region": "east"})
    assert one.value in ("no", "yes")
    with pytest.raises(InvalidInput, match="'plan'"):
        rt.predict({"tenure": 3.0, "charges": 50.0, "plan": 7, "region": "east"})


def test_column_transformer_regressor(churn: dict[str, Any], store: Any, tmp_path: Path) -> None:
    import converters

    report = converters.convert(churn["reg_uri"], quantize="auto", out=tmp_path / "reg",
                                calibration_data=churn["data"], tracking_uri=store.uri)
    df = churn["df"]
    rt = edge_runtime.load(report.out)
    got = np.array([p.value for p in rt.predict_batch(df)])
    want = churn["reg"].predict(df)
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    cands = {c["mode"]: c for c in report.manifest.quantization["candidates"]}
    assert report.mode == "none" and cands["none"]["chosen"]
    assert "tree ensembles" in cands["dynamic"]["reason"] and "tree ensembles" in cands["fp16"]["reason"]

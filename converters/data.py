"""Rows a conversion runs on: calibration (static quantization, drift reference) and held-out
rows (parity, auto's accuracy check), from a file, the MLflow input example, or synthesized.

Files: .csv (with a header), .parquet, .json / .jsonl (objects or lists), .npy (2-D).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConversionError

log = logging.getLogger(__name__)

MIN_SPLIT_ROWS = 40  # below this, calibration and held-out rows are the same rows
SYNTHETIC_ROWS = 400
MAX_ROWS = 2000  # per part; parity on more rows adds time, not confidence


@dataclass
class Rows:
    calibration: Any  # pandas DataFrame
    holdout: Any
    origin: str  # calibration-data | sample-data | input-example+synthetic | synthetic
    overlap: bool  # calibration and held-out rows are the same rows


def read_table(path: str | Path, names: tuple[str, ...] | None = None) -> Any:
    """A DataFrame from a data file; ``names`` label the columns of header-less data (.npy)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ConversionError(f"data file {p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
            arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
            if arr.ndim != 2:
                raise ConversionError(f"{p} holds a {arr.ndim}-D array; expected rows x features")
            cols = list(names) if names and len(names) == arr.shape[1] else [f"x{i}" for i in range(arr.shape[1])]
            return pd.DataFrame(arr, columns=cols)
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in (".json", ".jsonl"):
            from edge_runtime.rows import read_rows

            rows = read_rows(p)
            if isinstance(rows, np.ndarray) or (rows and not isinstance(rows[0], dict)):
                arr = np.asarray(rows)
                cols = list(names) if names and len(names) == arr.shape[1] else [f"x{i}" for i in range(arr.shape[1])]
                return pd.DataFrame(arr, columns=cols)
            return pd.DataFrame(rows)
        return pd.read_csv(p)
    except ConversionError:
        raise
    except Exception as exc:  # pandas/numpy parse errors of every kind
        raise ConversionError(f"cannot read data file {p}: {str(exc).splitlines()[0]}",
                              hint="Use a CSV with a header row, .parquet, .json or a 2-D .npy array") from exc


def conform(df: Any, names: tuple[str, ...], types: tuple[str, ...], what: str) -> Any:
    """Select the model's feature columns in order, with the dtypes the model expects."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        if len(df.columns) == len(names) and all(str(c).startswith("x") for c in df.columns):
            df = df.set_axis(list(names), axis=1)
        else:
            raise ConversionError(f"{what} lacks feature column {missing[0]!r}",
                                  hint="Its columns must include the model's features: " + ", ".join(names))
    extra = [c for c in df.columns if c not in names]
    if extra:
        log.info("%s: ignoring columns that are not features: %s", what, ", ".join(map(str, extra)))
    out = df[list(names)].copy()
    for n, t in zip(names, types, strict=True):
        if t == "string":
            out[n] = out[n].astype(object)
        elif t == "int" and not out[n].isna().any():
            out[n] = out[n].astype(np.int64)
        else:
            out[n] = out[n].astype(np.float64)
    if len(out) == 0:
        raise ConversionError(f"{what} has no rows")
    return out.reset_index(drop=True)


def example_frame(example: Any, names: tuple[str, ...]) -> Any:
    """The MLflow input example as a DataFrame with the feature names, or None."""
    import pandas as pd

    if example is None:
        return None
    if isinstance(example, dict):
        example = next(iter(example.values())) if len(example) == 1 else pd.DataFrame(example)
    if isinstance(example, pd.DataFrame):
        return example
    arr = np.asarray(example)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != len(names):
        return None
    return pd.DataFrame(arr, columns=list(names))


def synthesize(base: Any, names: tuple[str, ...], types: tuple[str, ...], n: int, seed: int = 0) -> Any:
    """Rows around ``base`` (uniform over each numeric column's widened range, categories
    drawn from those seen), or standard-normal rows when there is no base."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for name, kind in zip(names, types, strict=True):
        if base is None:
            vals = rng.standard_normal(n)
            cols[name] = np.round(vals) if kind == "int" else vals
            continue
        col = base[name]
        if kind == "string":
            seen = [v for v in col.dropna().unique().tolist()] or [""]
            cols[name] = np.array(seen, dtype=object)[rng.integers(0, len(seen), n)]
            continue
        x = col.dropna().to_numpy(dtype=np.float64)
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        span = hi - lo if hi > lo else max(1.0, abs(hi)) * 0.2
        vals = rng.uniform(lo - 0.25 * span, hi + 0.25 * span, n)
        cols[name] = np.round(vals).astype(np.int64) if kind == "int" else vals
    return pd.DataFrame(cols)


def split(df: Any, origin: str, seed: int = 0) -> Rows:
    """Shuffle and split into calibration and held-out halves (same rows when few)."""
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if len(df) < MIN_SPLIT_ROWS:
        return Rows(df, df, origin, overlap=True)
    half = len(df) // 2
    return Rows(df.iloc[:half].head(MAX_ROWS).reset_index(drop=True),
                df.iloc[half:].head(MAX_ROWS).reset_index(drop=True), origin, overlap=False)

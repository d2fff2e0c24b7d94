"""Read input rows from JSON, JSON lines, CSV or .npy (a path or ``-`` for stdin)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InvalidInput


def read_rows(source: str | Path, feature_names: Sequence[str] = (),
              feature_types: Sequence[str] = ()) -> list[Any] | np.ndarray:
    """Rows as a 2-D array (.npy) or a list of dicts / lists (JSON, JSON lines, CSV).

    JSON may be one object, a list of objects or lists, ``{"instances": [...]}`` or one
    object per line. CSV needs a header naming the features; numbers are parsed for numeric
    features, kept as text for string ones, and an empty cell is a missing value.
    """
    name = str(source)
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read input file {name}: {exc.strerror}") from exc
    if name.endswith(".npy") or data[:6] == b"\x93NUMPY":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InvalidInput(f"{name} is not a readable .npy array: {exc}") from exc
        return arr.reshape(1, -1) if arr.ndim == 1 else arr
    text = data.decode("utf-8-sig", errors="replace")
    stripped = text.lstrip()
    if name.endswith(".csv") or (stripped and stripped[0] not in "[{"):
        return _csv_rows(text, name, feature_names, feature_types)
    return _json_rows(stripped, name)


def _json_rows(text: str, name: str) -> list[Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{name} line {i} is not valid JSON: {exc.msg}") from exc
        return rows
    if isinstance(obj, dict) and "instances" in obj:
        obj = obj["instances"]
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list) and obj and not isinstance(obj[0], (dict, list)):
        return [obj]  # a single flat row
    if not isinstance(obj, list):
        raise InvalidInput(f"{name}: expected a JSON object or list of rows, got {type(obj).__name__}")
    return obj


def _csv_rows(text: str, name: str, names: Sequence[str], types: Sequence[str]) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise InvalidInput(f"{name}: CSV input needs a header row naming the features")
    kinds = dict(zip(names, types, strict=False))
    rows = []
    for i, rec in enumerate(reader):
        row: dict[str, Any] = {}
        for k, v in rec.items():
            if k is None:
                raise InvalidInput(f"{name} row {i + 1} has more cells than the header")
            kind = kinds.get(k, "float")
            if kind == "string":
                row[k] = v
            elif v is None or v.strip() == "":
                row[k] = None
            else:
                try:
                    row[k] = int(v) if kind == "int" else float(v)
                except ValueError:
                    raise InvalidInput(f"expected a number, got {v!r}", feature=k, row=i) from None
        rows.append(row)
    return rows

"""Turn what a caller passes into the arrays a model takes, or say exactly what is wrong.

Every check happens here, before the backend: a missing, extra, mistyped or non-finite
feature raises ``InvalidInput`` naming the feature. The common case, a numeric row for a
one-tensor model, is kept to a few numpy calls because it is on every ``predict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import InvalidInput
from edge_runtime.manifest import Manifest

_NUMERIC_KINDS = "fiub"
_FAST_NUMBERS = frozenset((float, int))
_isfinite = math.isfinite


def all_finite(a: np.ndarray) -> bool:
    """True when no element is NaN or Inf; several times cheaper than np.isfinite(a).all()
    on the small arrays of a single prediction, which is where it runs."""
    if a.size <= 16:
        return all(map(_isfinite, a.ravel().tolist()))
    flat = a.ravel()
    # NaN and Inf propagate through a dot product; only an overflow of huge finite values
    # gives a false alarm, which the exact check then clears.
    return _isfinite(flat.dot(flat)) or bool(np.isfinite(a).all())


def _describe(v: Any) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}"


class InputAdapter:
    """Validates rows for one manifest and builds the backend's feeds."""

    def __init__(self, manifest: Manifest) -> None:
        self.names = manifest.feature_names
        self.types = manifest.feature_types
        self.n = len(self.names)
        self.layout = manifest.input_layout
        self.missing_ok = frozenset(manifest.extra.get("missing_ok", ()))
        self._index = {n: i for i, n in enumerate(self.names)}
        if self.layout == "tensor":
            spec = manifest.inputs[0]
            self.input_name = spec.name
            self.dtype = np.dtype(spec.dtype)
            self.fmax = float(np.finfo(self.dtype).max) if self.dtype.kind == "f" else float(np.iinfo(self.dtype).max)
        else:
            self.input_names = [s.name for s in manifest.inputs]
            self.dtypes = [np.dtype(object) if s.dtype in ("str", "string", "object") else np.dtype(s.dtype)
                           for s in manifest.inputs]
        self.fast = self.layout == "tensor" and self.dtype.kind == "f" and self.n > 0  # row_values applies

    # -- public ---------------------------------------------------------------------------
    def feeds_one(self, features: Any) -> dict[str, np.ndarray]:
        """Feeds for a single row: a mapping of named features, or a 1-D sequence/array."""
        if self.layout == "tensor":
            vals = self.row_values(features)
            if vals is not None:
                if type(vals) is np.ndarray and vals.dtype is self.dtype:
                    return {self.input_name: vals.reshape(1, -1)}
                return {self.input_name: np.array([vals], dtype=self.dtype)}
        if isinstance(features, Mapping):
            return self._feeds_from_rows([self._row_from_mapping(features, None)])
        if isinstance(features, np.ndarray) and self.layout == "tensor":
            if features.ndim != 1:
                raise InvalidInput(f"predict() takes one row: a 1-D array of {self.n} values, got shape "
                                   f"{features.shape}; use predict_batch() for several rows")
            return self._feeds_from_matrix(features.reshape(1, -1))
        if isinstance(features, (Sequence, np.ndarray)) and not isinstance(features, (str, bytes)):
            return self._feeds_from_rows([self._row_from_sequence(features, None)])
        raise InvalidInput(f"expected a dict of {self.n} named features or a 1-D array, got "
                           f"{type(features).__name__}")

    def row_values(self, features: Any) -> Any:
        """One row of a float model, checked, as values to copy into a (1, n) buffer of the
        model's dtype: for the two common calls (a 1-D float array, a dict of Python numbers),
        else None, and the caller takes ``feeds_one``'s general path, which names any error.
        Finite as a Python float is not always finite in the model's dtype (float32 overflows
        above 3.4e38, an int may be too large for any float): such values take the general path."""
        if not self.fast:
            return None
        kind = type(features)
        if kind is np.ndarray:
            if features.ndim != 1 or features.shape[0] != self.n or features.dtype.kind != "f":
                return None
            if features.dtype is self.dtype:
                return features if all_finite(features) else None
            if self.n <= 16:  # e.g. float64 for a float32 model: in range first, then cast
                vals = features.tolist()
                return vals if max(map(abs, vals)) <= self.fmax and all(map(_isfinite, vals)) else None
            with np.errstate(over="ignore", invalid="ignore"):
                arr = features.astype(self.dtype)
            return arr if all_finite(arr) else None
        if kind is dict and len(features) == self.n:
            try:
                values = [features[n] for n in self.names]
            except KeyError:
                return None
        elif kind is list and len(features) == self.n:
            values = features
        else:
            return None
        if set(map(type, values)) <= _FAST_NUMBERS and max(map(abs, values)) <= self.fmax \
                and all(map(_isfinite, values)):
            return values
        return None

    def feeds_batch(self, rows: Any) -> tuple[dict[str, np.ndarray], int]:
        """Feeds for many rows: a 2-D array, a list of dicts or rows, or a DataFrame."""
        if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # pandas DataFrame, duck-typed
            missing = [n for n in self.names if n not in rows.columns]
            if missing:
                raise InvalidInput("column missing from the DataFrame", feature=missing[0])
            extra = [c for c in rows.columns if c not in self._index]
            if extra:
                raise InvalidInput("unknown column; the model's features are " + ", ".join(self.names),
                                   feature=str(extra[0]))
            rows = rows[list(self.names)].to_numpy() if self.layout == "tensor" else rows.to_dict("records")
        if isinstance(rows, np.ndarray) and self.layout == "tensor" and rows.dtype.kind in _NUMERIC_KINDS:
            if rows.ndim != 2:
                raise InvalidInput(f"predict_batch() takes a 2-D array (rows x {self.n} features), got "
                                   f"shape {rows.shape}")
            return self._feeds_from_matrix(rows), rows.shape[0]
        if isinstance(rows, np.ndarray):
            rows = list(rows)
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
            raise InvalidInput(f"predict_batch() takes a 2-D array, a list of rows or a DataFrame, got "
                               f"{type(rows).__name__}")
        if len(rows) == 0:
            raise InvalidInput("predict_batch() got no rows")
        built = []
        for i, r in enumerate(rows):
            if isinstance(r, Mapping):
                built.append(self._row_from_mapping(r, i))
            elif isinstance(r, (Sequence, np.ndarray)) and not isinstance(r, (str, bytes)):
                built.append(self._row_from_sequence(r, i))
            else:
                raise InvalidInput(f"expected a dict or a sequence of {self.n} values, got "
                                   f"{type(r).__name__}", row=i)
        return self._feeds_from_rows(built), len(built)

    # -- rows -----------------------------------------------------------------------------
    def _row_from_mapping(self, d: Mapping[str, Any], row: int | None) -> list[Any]:
        try:
            values = [d[n] for n in self.names]
        except KeyError:
            for n in self.names:
                if n not in d:
                    if n in self.missing_ok:
                        continue
                    raise InvalidInput(f"missing; expected {self._expect(self._index[n])}",
                                       feature=n, row=row) from None
            values = [d.get(n) for n in self.names]
        if len(d) != self.n:
            extra = [k for k in d if k not in self._index]
            if extra:
                raise InvalidInput("unknown feature; the model's features are " + ", ".join(self.names),
                                   feature=str(extra[0]), row=row)
        return values

    def _row_from_sequence(self, seq: Any, row: int | None) -> list[Any]:
        if len(seq) != self.n:
            raise InvalidInput(f"expected {self.n} values ({', '.join(self.names)}), got {len(seq)}",
                               row=row)
        return list(seq)

    def _expect(self, i: int) -> str:
        t = self.types[i]
        return {"float": "a finite number", "int": "an integer", "string": "a string"}[t]

    # -- feeds ----------------------------------------------------------------------------
    def _feeds_from_matrix(self, m: np.ndarray) -> dict[str, np.ndarray]:
        if m.shape[1] != self.n:
            raise InvalidInput(f"expected {self.n} values per row ({', '.join(self.names)}), got "
                               f"{m.shape[1]}")
        if m.dtype.kind not in _NUMERIC_KINDS:
            self._find_bad_numeric(m)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = m if m.dtype == self.dtype else m.astype(self.dtype)
        except (OverflowError, ValueError, TypeError):
            self._find_out_of_range(m)
            raise
        if not all_finite(arr):
            self._find_non_finite(arr, m)
        return {self.input_name: arr}

    def _feeds_from_rows(self, rows: list[list[Any]]) -> dict[str, np.ndarray]:
        if self.layout == "tensor":
            if self.missing_ok:
                rows = [[math.nan if v is None else v for v in r] for r in rows]
            try:
                m = np.array(rows, dtype=None)
            except (ValueError, TypeError, OverflowError):
                m = np.array(rows, dtype=object)
            if m.ndim != 2:  # ragged rows, or a value that is itself a list
                self._find_bad_numeric(np.array(rows, dtype=object).reshape(len(rows), -1), exact=False)
            elif m.dtype.kind not in _NUMERIC_KINDS:  # numpy made strings of mixed rows: look at them as given
                m = np.array(rows, dtype=object)
                self._find_bad_numeric(m)
            return self._feeds_from_matrix(m)
        feeds = {}
        for j, (name, dtype) in enumerate(zip(self.input_names, self.dtypes, strict=True)):
            col = [r[j] for r in rows]
            feeds[name] = self._column(j, col, dtype).reshape(-1, 1)
        return feeds

    def _column(self, j: int, col: list[Any], dtype: np.dtype) -> np.ndarray:
        name = self.names[j]
        kind = self.types[j]
        nullable = name in self.missing_ok
        for i, v in enumerate(col):
            row = i if len(col) > 1 else None
            if v is None:
                if nullable and kind != "string":
                    continue
                raise InvalidInput(f"missing (None); expected {self._expect(j)}", feature=name, row=row)
            if kind == "string":
                if not isinstance(v, str):
                    raise InvalidInput(f"expected a string, got {_describe(v)}", feature=name, row=row)
            elif isinstance(v, (str, bytes)) or not isinstance(v, (int, float, np.number, bool, np.bool_)):
                raise InvalidInput(f"expected {self._expect(j)}, got {_describe(v)}", feature=name, row=row)
            else:
                try:
                    f = float(v)
                except OverflowError:
                    raise InvalidInput(f"{_describe(v)} is out of range for {dtype}", feature=name, row=row) from None
                if kind == "int" and f != math.floor(f):
                    raise InvalidInput(f"expected an integer, got {v!r}", feature=name, row=row)
                if not nullable and not math.isfinite(f):
                    raise InvalidInput(f"expected {self._expect(j)}, got {v!r}", feature=name, row=row)
        if kind == "string":
            return np.array(col, dtype=object)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out = np.array([np.nan if v is None else v for v in col], dtype=dtype)
        except (OverflowError, ValueError, TypeError):
            raise InvalidInput(f"a value is out of range for {dtype}", feature=name) from None
        if out.dtype.kind == "f":
            for i, (v, c) in enumerate(zip(out.tolist(), col, strict=True)):
                if not math.isfinite(v) and c is not None and _finite_number(c):  # finite only as given
                    raise InvalidInput(f"{_describe(c)} is out of range for {dtype} (largest "
                                       f"{float(np.finfo(dtype).max):.3g})", feature=name,
                                       row=i if len(col) > 1 else None)
        return out

    def _find_bad_numeric(self, m: np.ndarray, exact: bool = True) -> None:
        """Raise for the first value that is not a number. ``exact``: ``m`` is the rows as given
        (numbers everywhere then means some are out of range); else a reshaped view of them."""
        for i in range(m.shape[0]):
            for j in range(min(m.shape[1], self.n)):
                v = m[i, j]
                if isinstance(v, (str, bytes)) or not isinstance(v, (int, float, np.number, bool, np.bool_)):
                    if v is None and self.names[j] in self.missing_ok:
                        continue
                    raise InvalidInput(f"expected {self._expect(j)}, got {_describe(v)}",
                                       feature=self.names[j], row=i if m.shape[0] > 1 else None)
        if exact and m.ndim == 2 and m.shape[1] == self.n:
            self._find_out_of_range(m)  # numbers, but some too large for a float (Python ints)
            return
        raise InvalidInput(f"rows must all have {self.n} numeric values, each a number (not a list)")

    def _find_out_of_range(self, m: np.ndarray) -> None:
        """Raise for the first value that does not fit the model's input dtype."""
        dtype = self.dtype
        big = float(np.finfo(dtype).max) if dtype.kind == "f" else None
        for i in range(m.shape[0]):
            for j in range(min(m.shape[1], self.n)):
                v = m[i, j]
                try:
                    f = float(v)
                except (OverflowError, TypeError, ValueError):
                    f = math.inf
                if big is not None and math.isfinite(f) and abs(f) <= big:
                    continue
                if big is None and math.isfinite(f):
                    continue
                if not math.isfinite(f) and isinstance(v, float | np.floating):
                    continue  # a real NaN/Inf: _find_non_finite names it
                raise InvalidInput(f"{_describe(v)} is out of range for {dtype}"
                                   + (f" (largest {big:.3g})" if big is not None else ""),
                                   feature=self.names[j], row=i if m.shape[0] > 1 else None)

    def _find_non_finite(self, arr: np.ndarray, given: np.ndarray | None = None) -> None:
        bad = ~np.isfinite(arr)
        for i, j in zip(*np.nonzero(bad), strict=True):
            if self.names[j] in self.missing_ok and np.isnan(arr[i, j]):
                continue
            row = int(i) if arr.shape[0] > 1 else None
            orig = given[i, j] if given is not None and given.shape == arr.shape else None
            if orig is not None and _finite_number(orig):  # finite as given, not in the model's dtype
                raise InvalidInput(f"{_describe(orig)} is out of range for {arr.dtype} (largest "
                                   f"{float(np.finfo(arr.dtype).max):.3g})", feature=self.names[j], row=row)
            raise InvalidInput(f"expected a finite number, got {float(arr[i, j])}", feature=self.names[j], row=row)


def _finite_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (OverflowError, TypeError, ValueError):
        return isinstance(v, int)  # an int too large for a float is finite, just out of range

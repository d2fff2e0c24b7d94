"""One MQTT payload -> one row of features for the model, or a ``BadPayload`` saying why not.

JSON: an object of named features (extra keys are ignored) or an array in feature order,
optionally under a dotted ``path``; CSV: one line, in ``columns`` order or the model's feature
order. The levels a topic filter's wildcards matched can be features too (``topic_fields``).
Reasons name the pipeline's own features, never echo the payload, so a hostile stream cannot
make events big or many.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any

from edge_runtime.pipeline_config import PipelineConfig

KEY_MAX_CHARS = 256


class BadPayload(ValueError):
    """A payload that cannot become a row; ``reason`` is short and bounded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RowReader:
    """Turns payloads of one pipeline into (row, key) for a model with ``features``."""

    def __init__(self, cfg: PipelineConfig, features: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.features = features
        self._path = cfg.path.split(".") if cfg.path else []
        self._key = cfg.key.split(".") if cfg.key else []
        self._columns = cfg.columns or features

    def read(self, payload: bytes, captures: list[str]) -> tuple[list[float], Any]:
        if self.cfg.format == "csv":
            return self._csv(payload, captures)
        try:
            doc = json.loads(payload)
        except RecursionError:
            raise BadPayload("bad JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise BadPayload("bad JSON") from None
        key = _clip(_walk(doc, self._key)) if self._key else None
        body = _walk(doc, self._path) if self._path else doc
        if body is _MISSING:
            raise BadPayload(f"no {self.cfg.path!r} in the payload")
        if isinstance(body, list):
            return self._array(body), key
        if isinstance(body, dict):
            return self._named(body, captures), key
        raise BadPayload("expected a JSON object of features or an array of numbers")

    def _named(self, body: dict[str, Any], captures: list[str]) -> list[float]:
        if not self.features:
            raise BadPayload("the model has no feature names: send a JSON array in feature order")
        row = []
        fields = self.cfg.topic_fields
        for name in self.features:
            if name in fields:
                v: Any = captures[fields[name] - 1]
            elif name in body:
                v = body[name]
            else:
                raise BadPayload(f"missing feature {name!r}")
            row.append(_number(v, name))
        return row

    def _array(self, body: list[Any]) -> list[float]:
        if self.features and len(body) != len(self.features):
            raise BadPayload(f"expected {len(self.features)} values, got {min(len(body), 10**6)}")
        return [_number(v, self.features[i] if i < len(self.features) else f"#{i}") for i, v in enumerate(body)]

    def _csv(self, payload: bytes, captures: list[str]) -> tuple[list[float], Any]:
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadPayload("bad CSV: not UTF-8") from None
        lines = text.splitlines()
        if len(lines) != 1:
            raise BadPayload("bad CSV: send one row per message" if lines else "bad CSV: empty")
        try:
            cells = next(csv.reader(lines))
        except csv.Error:
            raise BadPayload("bad CSV") from None
        cols = self._columns
        if len(cells) != len(cols):
            raise BadPayload(f"bad CSV: expected {len(cols)} columns, got {min(len(cells), 10**6)}")
        named = dict(zip(cols, cells, strict=True))
        key = _clip(named.get(self.cfg.key)) if self.cfg.key else None
        fields = self.cfg.topic_fields
        row = []
        for name in self.features or cols:
            if name in fields:
                row.append(_number(captures[fields[name] - 1], name))
            elif name in named:
                row.append(_number(named[name], name))
            else:
                raise BadPayload(f"missing feature {name!r}")
        return row, key


_MISSING: Any = object()


def _walk(doc: Any, path: list[str]) -> Any:
    for step in path:
        if isinstance(doc, dict) and step in doc:
            doc = doc[step]
        elif isinstance(doc, list) and step.isdigit() and int(step) < len(doc):
            doc = doc[int(step)]
        else:
            return _MISSING
    return doc


def _number(v: Any, name: str) -> float:
    if isinstance(v, bool):
        raise BadPayload(f"feature {name!r} is not a number")
    if isinstance(v, str):
        try:
            v = float(v.strip())  # CSV cells, topic levels and numbers sent as strings
        except ValueError:
            raise BadPayload(f"feature {name!r} is not a number") from None
    elif not isinstance(v, (int, float)):
        raise BadPayload(f"feature {name!r} is not a number")
    try:
        x = float(v)
    except OverflowError:
        raise BadPayload(f"feature {name!r} is out of range") from None
    if not math.isfinite(x):
        raise BadPayload(f"feature {name!r} is not finite")
    return x


def _clip(v: Any) -> Any:
    """The correlation key as sent (bounded), or None when the payload has none."""
    if v is _MISSING:
        return None
    if isinstance(v, str):
        return v[:KEY_MAX_CHARS]
    if v is None or isinstance(v, (bool, int, float)):
        return v
    return json.dumps(v, separators=(",", ":"), default=str)[:KEY_MAX_CHARS]

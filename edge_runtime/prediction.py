"""What ``predict`` returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

SOURCES = ("model", "cache", "fallback")


class Prediction:
    """One answer: the value, where it came from, which model version, how long it took.

    ``probabilities`` (classifiers) is a ``{class: probability}`` dict built on first access,
    so a caller who only wants ``value`` does not pay for it.
    """

    __slots__ = (
        "_classes",
        "_proba",
        "_probabilities",
        "latency_ms",
        "model_version",
        "reason",
        "request_id",
        "source",
        "value",
        "variant",
    )

    def __init__(self, value: Any, source: str, model_version: str | None, latency_ms: float,
                 proba: np.ndarray | list[float] | None = None, classes: tuple[Any, ...] | None = None,
                 reason: str | None = None, request_id: str | None = None) -> None:
        self.variant: str | None = None  # "primary" or "candidate" while an experiment runs
        self.value = value
        self.source = source
        self.model_version = model_version
        self.latency_ms = latency_ms
        self.reason = reason  # why a fallback answered; None from the model or cache
        self.request_id = request_id
        self._proba = proba
        self._classes = classes
        self._probabilities: dict[Any, float] | None = None

    @property
    def probabilities(self) -> dict[Any, float] | None:
        if self._probabilities is None and self._proba is not None and self._classes is not None:
            proba = self._proba.tolist() if isinstance(self._proba, np.ndarray) else self._proba
            self._probabilities = dict(zip(self._classes, proba, strict=True))
        return self._probabilities

    @property
    def classes(self) -> tuple[Any, ...] | None:
        return self._classes

    def to_dict(self, *, str_keys: bool = True) -> dict[str, Any]:
        """The answer as JSON-ready data; ``str_keys=False`` leaves class labels as they are in
        ``probabilities`` (for a serializer that writes them as strings itself)."""
        d: dict[str, Any] = {"value": self.value}
        probs = self.probabilities
        if probs is not None:
            d["probabilities"] = {str(k): v for k, v in probs.items()} if str_keys else probs
        d["source"] = self.source
        d["model_version"] = self.model_version
        d["latency_ms"] = round(self.latency_ms, 4)
        if self.reason:
            d["reason"] = self.reason
        if self.request_id is not None:
            d["request_id"] = self.request_id
        if self.variant is not None:
            d["variant"] = self.variant
        return d

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason else ""
        return (f"Prediction(value={self.value!r}, source={self.source!r}, "
                f"model_version={self.model_version!r}, latency_ms={self.latency_ms:.3f}{extra})")


class PredictionBatch(Sequence[Prediction]):
    """What ``predict_batch`` returns: a sequence of ``Prediction``, one per row, built on access.

    Building hundreds of objects would cost more than the inference of a small model, so the
    batch keeps the arrays and makes a ``Prediction`` only when a row is read. Vectorised
    callers use ``values``, ``probabilities`` and ``sources`` directly. Rows answered by the
    model share one source; rows answered by the fallback may each come from another place
    (last good answer of some version, the fallback artifact, the constant), which ``sources``,
    ``row.model_version`` and ``row.reason`` tell per row.

    >>> ps = rt.predict_batch(rows)                        # doctest: +SKIP
    >>> ps[0].value, len(ps), ps.values, ps.probabilities  # doctest: +SKIP
    """

    __slots__ = ("_classes", "_proba", "_reasons", "_rows", "_values", "latency_ms", "model_version", "source")

    def __init__(self, values: list[Any], source: str, model_version: str | None, latency_ms: float,
                 proba: np.ndarray | None = None, classes: tuple[Any, ...] | None = None,
                 reason: str | None = None) -> None:
        self._values = values
        self.source = source  # where every row came from ("mixed" when rows differ)
        self.model_version = model_version
        self.latency_ms = latency_ms  # of the whole batch
        self._proba = proba
        self._classes = classes
        self._reasons = reason
        self._rows: list[Prediction] | None = None  # per-row answers when rows differ in origin

    @classmethod
    def of_rows(cls, rows: list[Prediction], model_version: str | None, latency_ms: float,
                classes: tuple[Any, ...] | None = None) -> PredictionBatch:
        """A batch whose rows were answered one by one (the fallback path)."""
        sources = {p.source for p in rows}
        source = sources.pop() if len(sources) == 1 else "mixed"
        proba = None
        if rows and classes and all(p._proba is not None for p in rows):
            proba = np.asarray([np.asarray(p._proba, dtype=np.float64).reshape(-1) for p in rows])
        batch = cls([p.value for p in rows], source, model_version, latency_ms, proba, classes)
        batch._rows = rows
        return batch

    @property
    def values(self) -> list[Any]:
        return self._values

    @property
    def probabilities(self) -> np.ndarray | None:
        """Rows x classes, columns in the order of ``classes``; None for regressors (and for a
        fallback batch where some row has no probabilities)."""
        return self._proba

    @property
    def sources(self) -> list[str]:
        """Where each row's answer came from: ``model``, ``cache`` or ``fallback``."""
        if self._rows is not None:
            return [p.source for p in self._rows]
        return [self.source] * len(self._values)

    @property
    def classes(self) -> tuple[Any, ...] | None:
        return self._classes

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, i: int) -> Prediction: ...

    @overload
    def __getitem__(self, i: slice) -> list[Prediction]: ...

    def __getitem__(self, i: int | slice) -> Prediction | list[Prediction]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._rows is not None:
            return self._rows[i]
        row = self._values[i]  # raises IndexError as a list would; negative indices work
        if i < 0:
            i += len(self._values)
        return Prediction(row, self.source, self.model_version, self.latency_ms,
                          None if self._proba is None else self._proba[i], self._classes, self._reasons)

    def __iter__(self) -> Iterator[Prediction]:
        for i in range(len(self._values)):
            yield self[i]

    def __repr__(self) -> str:
        return (f"PredictionBatch({len(self)} rows, source={self.source!r}, "
                f"model_version={self.model_version!r}, latency_ms={self.latency_ms:.3f})")

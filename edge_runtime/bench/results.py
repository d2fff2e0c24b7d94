"""What a benchmark produces: one ``Measurement`` per artifact × threads × batch size, inside a
``BenchReport`` with the device header. Both round-trip through JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from edge_runtime.bench.measure import LatencyStats

REPORT_FORMAT = 1


@dataclass
class Measurement:
    artifact: str  # the directory as given
    label: str  # short name for tables and plots
    name: str
    version: str
    backend: str
    quantization: str
    file_size_bytes: int
    threads: int
    batch_size: int
    mode: str  # backend: the backend call on prepared feeds; predict: Runtime.predict end to end
    load_ms: float  # verify hash + open backend + tensor checks + smoke test
    session_ms: float  # the backend session creation part of load_ms
    first_ms: float  # the first inference after load, cold
    warmup: int
    latency: LatencyStats
    rss_before_bytes: int | None  # process RSS just before load
    rss_after_bytes: int | None  # ... after load, first inference, warm-up and timed runs
    model_added_bytes: int | None  # rss_after - rss_before: what this model holds on to
    peak_rss_bytes: int | None  # process peak RSS during this measurement
    peak_is_per_measurement: bool  # False where the OS peak cannot be reset (then: since start)
    agreement: dict[str, Any] | None = None  # vs the first artifact, same rows; None for the first
    accuracy: dict[str, Any] | None = None  # vs --labels
    samples_ns: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("latency", "samples_ns")}
        d["latency"] = self.latency.to_dict()
        if samples and self.samples_ns is not None:
            d["samples_ns"] = self.samples_ns.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls) if f.name not in ("latency", "samples_ns")}
        kw["latency"] = LatencyStats.from_dict(d["latency"])
        s = d.get("samples_ns")
        kw["samples_ns"] = None if s is None else np.asarray(s, dtype=np.int64)
        return cls(**kw)


@dataclass
class BenchReport:
    device: dict[str, Any]
    settings: dict[str, Any]
    timer_overhead_ns: float
    started_at: str
    results: list[Measurement]
    notes: list[str] = field(default_factory=list)
    format: int = REPORT_FORMAT

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {"format": self.format, "started_at": self.started_at, "device": self.device,
                "settings": self.settings, "timer_overhead_ns": self.timer_overhead_ns,
                "notes": list(self.notes), "results": [m.to_dict(samples) for m in self.results]}

    def to_json(self, samples: bool = False) -> str:
        return json.dumps(self.to_dict(samples), indent=2, allow_nan=False, default=_plain)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        return cls(device=dict(d["device"]), settings=dict(d["settings"]),
                   timer_overhead_ns=float(d["timer_overhead_ns"]), started_at=str(d["started_at"]),
                   results=[Measurement.from_dict(r) for r in d["results"]], notes=list(d.get("notes", [])),
                   format=int(d.get("format", REPORT_FORMAT)))

    @classmethod
    def from_json(cls, text: str) -> BenchReport:
        return cls.from_dict(json.loads(text))


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")

"""A rollout plan: its steps and the limits each step is judged by.

From the command line (``--steps 1,5,25,100 --max-error-rate 0.01 --max-p99-ms 50
--min-samples 500 --window 5m``) or a TOML plan with the same keys:

    steps = [1, 5, "pause", 25, 100]     # "pause": hold there until `rollout resume`
    max_error_rate = 0.01
    max_fallback_rate = 0.05
    max_p99_ms = 50
    min_samples = 500
    window = "5m"
    max_silent = 0.2                     # share of a step's devices; more halts and rolls back
    max_failed = 3                       # devices that failed or rolled back; more halts and rolls back
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError

PAUSE = "pause"
KEYS = ("steps", "max_error_rate", "max_fallback_rate", "max_p99_ms", "min_samples", "window", "max_silent",
        "max_failed")


@dataclass(frozen=True)
class Step:
    percent: float  # share of the group's devices; 0 for a pause
    pause: bool = False

    def label(self) -> str:
        return PAUSE if self.pause else f"{self.percent:g}%"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    max_error_rate: float = 0.01
    max_fallback_rate: float | None = None
    max_p99_ms: float | None = None
    min_samples: int = 500
    window_s: float = 300.0
    max_silent: float = 0.2
    max_failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [PAUSE if s.pause else s.percent for s in self.steps], "max_error_rate": self.max_error_rate,
                "max_fallback_rate": self.max_fallback_rate, "max_p99_ms": self.max_p99_ms,
                "min_samples": self.min_samples, "window_s": self.window_s, "max_silent": self.max_silent,
                "max_failed": self.max_failed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return build({**d, "window": d.get("window_s", d.get("window", 300.0))})


def load_plan(path: str | Path) -> Plan:
    """A TOML plan; ConfigError naming the file, the key and the fix."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the plan: {exc.strerror or exc}", file=p) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=p) from exc
    try:
        return build(raw)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=p, key=exc.key) from exc


def build(raw: dict[str, Any]) -> Plan:
    unknown = sorted(set(raw) - set(KEYS) - {"window_s"})
    if unknown:
        raise ConfigError(f"unknown key; a plan has {', '.join(KEYS)}", key=unknown[0])
    steps = _steps(raw.get("steps", [1, 5, 25, 100]))
    window = raw.get("window", 300.0)
    window_s = parse_duration(window) if isinstance(window, str) else _number(window, "window", lo=0.0)
    return Plan(
        steps=steps,
        max_error_rate=_number(raw.get("max_error_rate", 0.01), "max_error_rate", lo=0.0, hi=1.0),
        max_fallback_rate=_opt(raw.get("max_fallback_rate"), "max_fallback_rate", hi=1.0),
        max_p99_ms=_opt(raw.get("max_p99_ms"), "max_p99_ms"),
        min_samples=int(_number(raw.get("min_samples", 500), "min_samples", lo=0.0)),
        window_s=window_s,
        max_silent=_number(raw.get("max_silent", 0.2), "max_silent", lo=0.0, hi=1.0),
        max_failed=int(_number(raw.get("max_failed", 0), "max_failed", lo=0.0)))


def parse_steps(text: str) -> tuple[Step, ...]:
    """``1,5,pause,25,100`` from the command line."""
    return _steps([t.strip() for t in text.split(",") if t.strip()])


def _steps(items: Any) -> tuple[Step, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError("steps must be a list of shares such as [1, 5, 25, 100]", key="steps")
    out: list[Step] = []
    last = 0.0
    for item in items:
        if isinstance(item, str) and item.strip().lower() == PAUSE:
            out.append(Step(0.0, pause=True))
            continue
        try:
            pct = float(str(item).rstrip("%")) if not isinstance(item, bool) else float("nan")
        except ValueError:
            raise ConfigError(f"{item!r} is not a share (1 to 100) or \"pause\"", key="steps") from None
        if not 0 < pct <= 100:
            raise ConfigError(f"{item!r} is not a share between 0 and 100", key="steps")
        if pct <= last:
            raise ConfigError(f"steps must grow: {pct:g} after {last:g}", key="steps")
        out.append(Step(pct))
        last = pct
    if last != 100:
        raise ConfigError("the last step must be 100 (every device of the group)", key="steps")
    return tuple(out)


def parse_duration(text: str) -> float:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration such as 5m, 90s or 1h", key="window") from None
    if v < 0:
        raise ConfigError("a window cannot be negative", key="window")
    return v


def _number(v: Any, key: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"expected a number, got {v!r}", key=key)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{v} is out of range ({lo if lo is not None else '-inf'} to "
                          f"{hi if hi is not None else 'inf'})", key=key)
    return float(v)


def _opt(v: Any, key: str, hi: float | None = None) -> float | None:
    return None if v is None else _number(v, key, lo=0.0, hi=hi)

"""``[[pipelines]]`` of a device config: MQTT-triggered inference, validated at start.

    [[pipelines]]
    name = "line-3-vibration"
    input = ["plant/line3/+/telemetry"]
    output = "plant/line3/{1}/prediction"
    when = "value == 1 or probabilities.fault >= 0.8"

The topic filters, the output template and the ``when`` condition are parsed here, once, so a
mistake is a ``ConfigError`` at start naming the key, never a surprise on the first message.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_TOKEN = re.compile(r"""\s*(?:(?P<op>==|!=|<=|>=|<|>)|(?P<str>"[^"]*"|'[^']*')|(?P<word>[^\s=!<>"']+))""")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    input: tuple[str, ...]
    output: str
    format: str = field(default="json", metadata={"choices": ("json", "csv")})
    path: str | None = None  # dotted path to the features in a nested JSON payload
    key: str | None = None  # dotted path (JSON) or column (CSV) echoed as "key"
    columns: tuple[str, ...] = ()  # CSV column names; default: the model's features, in order
    topic_fields: dict[str, int] = field(default_factory=dict)  # feature -> wildcard number (1-based)
    qos: int = field(default=1, metadata={"min": 0, "max": 2})
    retain: bool = False
    when: str | None = None
    batch_max: int = field(default=32, metadata={"min": 1, "max": 4096})
    batch_ms: float = field(default=5.0, metadata={"min": 0, "max": 10000})
    queue_max: int = field(default=10000, metadata={"min": 1})
    max_payload_kb: float = field(default=256.0, metadata={"min": 0.001})
    rate_limit: float | None = field(default=None, metadata={"min": 0.001})  # answers published per second
    mqtt: Any = None  # MqttConfig of another broker ([pipelines.mqtt]); None: the device's broker


def compile_pipeline(cfg: PipelineConfig, *, file: Path, where: str) -> None:
    """Check what the dataclass types cannot: filters, template, condition, field names."""
    def bad(key: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=file, key=f"{where}.{key}")

    if not cfg.name or "/" in cfg.name:
        raise bad("name", "give each pipeline a non-empty name without '/'")
    if not cfg.input:
        raise bad("input", "list at least one topic filter to subscribe to, e.g. [\"sensors/+/telemetry\"]")
    for i, f in enumerate(cfg.input):
        try:
            filter_parts(f)
        except ValueError as exc:
            raise bad(f"input[{i}]", str(exc)) from None
    wildcards = min(sum(p in ("+", "#") for p in filter_parts(f)) for f in cfg.input)
    try:
        OutputTemplate(cfg.output, wildcards)
    except ValueError as exc:
        raise bad("output", str(exc)) from None
    for feature, n in cfg.topic_fields.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= wildcards:
            raise bad(f"topic_fields.{feature}", f"must be the number of a wildcard in every input filter "
                                                 f"(1..{wildcards}), got {n!r}")
    if cfg.when is not None:
        try:
            compile_condition(cfg.when)
        except ValueError as exc:
            raise bad("when", str(exc)) from None
    if cfg.columns and cfg.format != "csv":
        raise bad("columns", "columns name CSV fields; set format = \"csv\" or remove columns")
    for key in ("path", "key"):
        v = getattr(cfg, key)
        if v is not None and (not v or any(not s for s in v.split("."))):
            raise bad(key, f"{v!r} is not a dotted path such as \"data.sensor\"")


# -- topics -----------------------------------------------------------------------------------------
def filter_parts(f: str) -> list[str]:
    """An MQTT topic filter split into levels; ValueError says what is wrong with it."""
    if not f or "\x00" in f:
        raise ValueError("a topic filter must be a non-empty string")
    parts = f.split("/")
    for i, p in enumerate(parts):
        if "#" in p and (p != "#" or i != len(parts) - 1):
            raise ValueError(f"{f!r}: '#' must be a whole level and the last one")
        if "+" in p and p != "+":
            raise ValueError(f"{f!r}: '+' must be a whole level, as in sensors/+/telemetry")
    return parts


def match(parts: list[str], topic: str) -> list[str] | None:
    """The levels the wildcards of a filter matched in ``topic`` (``#`` gives the rest joined by
    '/'), or None when the topic does not match. Topics starting with '$' match no wildcard first
    level, as brokers do."""
    levels = topic.split("/")
    if topic.startswith("$") and parts and parts[0] in ("+", "#"):
        return None
    got: list[str] = []
    for i, p in enumerate(parts):
        if p == "#":
            got.append("/".join(levels[i:]))
            return got
        if i >= len(levels):
            return None
        if p == "+":
            got.append(levels[i])
        elif p != levels[i]:
            return None
    return got if len(levels) == len(parts) else None


class OutputTemplate:
    """``plant/{1}/prediction``: ``{N}`` is what the N-th wildcard matched; ``{device}`` and
    ``{pipeline}`` are the device id and the pipeline name."""

    def __init__(self, template: str, wildcards: int) -> None:
        if not template or "+" in template or "#" in template or "\x00" in template:
            raise ValueError("the output topic must be non-empty and free of wildcards ('+', '#')")
        for name in _PLACEHOLDER.findall(template):
            if name in ("device", "pipeline"):
                continue
            if not name.isdigit() or not 1 <= int(name) <= wildcards:
                raise ValueError(f"{{{name}}} is not a wildcard of every input filter: use {{1}}..{{{wildcards}}}"
                                 if wildcards else f"{{{name}}} needs a wildcard ('+' or '#') in the input filters")
        self.template = template

    def render(self, captures: list[str], **names: str) -> str:
        def sub(m: re.Match[str]) -> str:
            k = m.group(1)
            return captures[int(k) - 1] if k.isdigit() else names[k]

        return _PLACEHOLDER.sub(sub, self.template)


# -- when ---------------------------------------------------------------------------------------------
Condition = Callable[[Any, "dict[str, float] | None"], bool]


def compile_condition(text: str) -> Condition:
    """``value == 1``, ``probabilities.fault >= 0.8 and value != "ok"``: comparisons of ``value``
    or ``probabilities.<class>`` with a number or a string, joined by ``and`` (binds first) and
    ``or``. Returns ``cond(value, probabilities) -> bool``."""
    tokens = _tokens(text)
    ors: list[list[Callable[[Any, dict[str, float] | None], bool]]] = [[]]
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise ValueError(f"{text!r}: expected a comparison such as \"value == 1\" at the end")
        (k1, lhs), (k2, op), (k3, rhs) = tokens[i:i + 3]
        if k1 != "word" or not (lhs == "value" or (lhs.startswith("probabilities.") and len(lhs) > 14)):
            raise ValueError(f"{text!r}: compare value or probabilities.<class>, not {lhs!r}")
        if k2 != "op":
            raise ValueError(f"{text!r}: expected one of {', '.join(_OPS)} after {lhs}, got {op!r}")
        if k3 == "op":
            raise ValueError(f"{text!r}: expected a number or a string after {op}")
        ors[-1].append(_comparison(lhs, op, _literal(k3, rhs)))
        i += 3
        if i == len(tokens):
            break
        kind, joiner = tokens[i]
        if kind != "word" or joiner not in ("and", "or"):
            raise ValueError(f"{text!r}: expected 'and' or 'or', got {joiner!r}")
        if joiner == "or":
            ors.append([])
        i += 1
    groups = [tuple(g) for g in ors]
    return lambda v, probs: any(all(c(v, probs) for c in g) for g in groups)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"{text!r}: cannot read it from {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    if not out:
        raise ValueError("an empty condition: write one such as \"value == 1\" or remove when")
    return out


def _literal(kind: str, text: str) -> float | str:
    if kind == "str":
        return text[1:-1]
    try:
        x = float(text)
    except ValueError:
        return text  # a bare word is a string: value == alarm
    if not math.isfinite(x):
        raise ValueError(f"{text!r} is not a finite number")
    return x


def _comparison(lhs: str, op: str, rhs: float | str) -> Callable[[Any, dict[str, float] | None], bool]:
    fn = _OPS[op]
    cls = lhs[len("probabilities."):] if lhs != "value" else None

    def cmp(value: Any, probs: dict[str, float] | None) -> bool:
        if cls is not None:
            if not probs or cls not in probs:
                return False
            value = probs[cls]
        if isinstance(rhs, float):
            try:
                x = float(value)
            except (TypeError, ValueError):
                return False
            return bool(fn(x, rhs))
        return bool(fn(str(value), rhs))

    return cmp

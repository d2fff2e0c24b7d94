"""The device config: one TOML file per device, validated once at start.

    cfg = load_config("device_configs/pi4.toml")
    cfg.device.id, cfg.mqtt.host, cfg.model.artifact
    rt = edge_runtime.load(cfg.model.artifact, **cfg.runtime_options())

Sections: [device] [model] [runtime] [mqtt] [updates] [http] [experiment] and [[pipelines]]. Every unknown key and
every bad value is a ``ConfigError`` naming the file, the key and the reason. [runtime] keys are
checked against the fields of ``RuntimeOptions``, so a new runtime option needs no change here.

Environment overrides: ``EDGE_<SECTION>_<KEY>`` replaces a scalar key of [device], [model],
[mqtt], [updates] or [http], e.g. ``EDGE_MQTT_HOST=10.0.0.5`` or ``EDGE_MQTT_PASSWORD=...``
(the password can only come from the environment or ``password_file``, never the TOML file).
Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.options import RuntimeOptions
from edge_runtime.pipeline_config import PipelineConfig, compile_pipeline

ENV_PREFIX = "EDGE_"
_TOPIC_FORBIDDEN = set("/+#\x00 ")


def _meta(**kw: Any) -> dict[str, Any]:
    return kw


@dataclass(frozen=True)
class DeviceConfig:
    id: str = field(default_factory=socket.gethostname, metadata=_meta(topic=True))
    fleet: str = field(default="default", metadata=_meta(topic=True))
    groups: tuple[str, ...] = field(default=(), metadata=_meta(topic=True))
    data_dir: Path = Path("/var/lib/edge-runtime")


@dataclass(frozen=True)
class ModelConfig:
    artifact: Path | None = None  # first model, until an update installs another
    backend: str = field(default="auto", metadata=_meta(choices=("auto", "onnx", "tflite", "fake")))
    threads: int = field(default=1, metadata=_meta(min=0))


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"
    port: int = field(default=1883, metadata=_meta(min=1, max=65535))
    tls: bool = False
    ca_file: Path | None = field(default=None, metadata=_meta(exists=True))
    cert_file: Path | None = field(default=None, metadata=_meta(exists=True))
    key_file: Path | None = field(default=None, metadata=_meta(exists=True))
    username: str | None = None
    password_file: Path | None = field(default=None, metadata=_meta(exists=True))
    password: str | None = field(default=None, metadata=_meta(env_only=True))
    client_id: str | None = None  # default: the device id
    keepalive_s: int = field(default=30, metadata=_meta(min=5, max=65535))
    session_expiry_s: int = field(default=86400, metadata=_meta(min=0))  # cmds queued while offline
    metrics_interval_s: float = field(default=30.0, metadata=_meta(min=0.05))
    heartbeat_interval_s: float = field(default=60.0, metadata=_meta(min=0.05))
    reconnect_min_s: float = field(default=1.0, metadata=_meta(min=0.01))
    reconnect_max_s: float = field(default=120.0, metadata=_meta(min=0.01))
    inflight: int = field(default=100, metadata=_meta(min=1, max=10000))  # unacknowledged publishes
    outbox_max_mb: float = field(default=64.0, metadata=_meta(min=0.001))
    # events may grow past outbox_max_mb (metrics go first) up to this second limit
    outbox_events_max_mb: float | None = field(default=None, metadata=_meta(min=0.001))
    outbox_policy: str = field(default="drop-metrics-first",
                               metadata=_meta(choices=("drop-metrics-first", "drop-oldest")))
    # full: every queued message survives power loss (fsync per write); normal: survives a crash
    outbox_sync: str = field(default="full", metadata=_meta(choices=("full", "normal")))
    shutdown_flush_s: float = field(default=5.0, metadata=_meta(min=0))

    @property
    def events_limit_mb(self) -> float:
        return self.outbox_events_max_mb if self.outbox_events_max_mb is not None else 2 * self.outbox_max_mb

    def read_password(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return None


@dataclass(frozen=True)
class UpdatesConfig:
    public_keys: tuple[Path, ...] = field(default=(), metadata=_meta(exists=True))  # trusted for both roles
    artifact_keys: tuple[Path, ...] = field(default=(), metadata=_meta(exists=True))  # verify manifest.sig
    deployment_keys: tuple[Path, ...] = field(default=(), metadata=_meta(exists=True))  # desired states, commands
    keep_versions: int = field(default=3, metadata=_meta(min=1))
    probation_s: float = field(default=300.0, metadata=_meta(min=0))
    probation_min_predictions: int = field(default=100, metadata=_meta(min=0))
    probation_max_restarts: int = field(default=2, metadata=_meta(min=0))  # more starts in probation: roll back
    max_error_rate: float = field(default=0.01, metadata=_meta(min=0, max=1))
    max_fallback_rate: float = field(default=0.05, metadata=_meta(min=0, max=1))
    max_p99_ms: float | None = field(default=None, metadata=_meta(min=0))
    # against the previous version: p99 over max_p99_ratio x its p99 and p99_slack_ms more is a breach
    max_p99_ratio: float = field(default=3.0, metadata=_meta(min=1))
    p99_slack_ms: float = field(default=5.0, metadata=_meta(min=0))
    chunk_window: int = field(default=16, metadata=_meta(min=1, max=1024))  # chunks asked for at once
    download_stall_s: float = field(default=10.0, metadata=_meta(min=0.1))  # no chunk this long: ask again


@dataclass(frozen=True)
class ExperimentConfig:
    """[experiment]: a candidate beside the model on this device (edge_runtime.experiment)."""

    candidate: Path | None = None  # an artifact directory; it must verify like any artifact
    mode: str = field(default="split", metadata=_meta(choices=("split", "shadow")))
    weight: float = field(default=0.1, metadata=_meta(min=0, max=1))  # share of keys to the candidate (split)
    key: str = "request_id"  # or a feature name; random when a request has neither
    shadow_sample: float = field(default=0.2, metadata=_meta(min=0, max=1))  # share also scored (shadow)


@dataclass(frozen=True)
class HttpConfig:
    port: int = field(default=8080, metadata=_meta(min=0, max=65535))
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    """A validated device config. ``runtime`` holds the [runtime] keys as given."""

    file: Path
    device: DeviceConfig
    model: ModelConfig
    runtime: dict[str, Any]
    mqtt: MqttConfig | None  # None: no [mqtt] section, the agent serves but does not report
    updates: UpdatesConfig
    http: HttpConfig | None  # None: no [http] section, local API off
    pipelines: tuple[PipelineConfig, ...] = ()  # [[pipelines]]: MQTT-triggered inference
    experiment: ExperimentConfig | None = None  # [experiment]: A/B split or shadow on this device

    def runtime_options(self) -> dict[str, Any]:
        """Keyword options for ``edge_runtime.load(dir, **options)``."""
        return {"backend": self.model.backend, "threads": self.model.threads, **self.runtime}

    @property
    def client_id(self) -> str:
        return (self.mqtt.client_id if self.mqtt and self.mqtt.client_id else None) or self.device.id


_SECTIONS: dict[str, type] = {"device": DeviceConfig, "model": ModelConfig, "mqtt": MqttConfig,
                              "updates": UpdatesConfig, "http": HttpConfig, "experiment": ExperimentConfig}
_OPTIONAL_SECTIONS = {"mqtt", "http", "experiment"}


def load_config(path: str | Path, *, env: typing.Mapping[str, str] | None = None,
                check_files: bool = True) -> Config:
    """Read, validate and return a device config; raise ConfigError naming file, key and reason.

    ``check_files=False`` skips checking that the files it names (TLS, password) exist, to
    validate a config written for another machine."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found; pass the path of a device config (see device_configs/)",
                          file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8 text", file=path) from exc

    known = {*_SECTIONS, "runtime", "pipelines"}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"unknown section; known: {', '.join(sorted(known))}", file=path, key=name)
        if name == "pipelines":
            continue
        if not isinstance(value, dict):
            raise ConfigError("must be a table ([" + name + "])", file=path, key=name)

    base = path.resolve().parent
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name, {}))
        overridden = _env_overrides(name, cls, env)
        if name not in raw and name in _OPTIONAL_SECTIONS and not overridden:
            sections[name] = None
            continue
        for key in values:
            f = _fields(cls).get(key)
            if f is not None and f.metadata.get("env_only"):
                raise ConfigError(f"do not put secrets in the config file; use {key}_file or the environment "
                                  f"variable {ENV_PREFIX}{name.upper()}_{key.upper()}", file=path, key=f"{name}.{key}")
        values.update(overridden)
        sections[name] = build_section(cls, values, file=path, section=name, base=base)

    runtime = dict(raw.get("runtime", {}))
    _check_runtime(runtime, path)
    pipelines = _pipelines(raw.get("pipelines"), path, base)
    cfg = Config(file=path, runtime=runtime, pipelines=pipelines, **sections)
    _check_cross(cfg)
    if check_files:
        _check_files(cfg)
    return cfg


def _env_overrides(section: str, cls: type, env: typing.Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _fields(cls):
        var = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
        if var in env:
            out[name] = _EnvValue(env[var], var)
    return out


@dataclass(frozen=True)
class _EnvValue:
    """A value from the environment: a string to be parsed into the field's type."""

    text: str
    var: str


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def build_section(cls: type, values: dict[str, Any], *, file: Path, section: str, base: Path | None = None) -> Any:
    """Check ``values`` against the dataclass ``cls``'s fields, types and metadata and build it."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{section}.{key}"
        f = fields.get(key)
        if f is None or not f.init:
            raise ConfigError(f"unknown key; known in [{section}]: {', '.join(sorted(fields))}", file=file, key=where)
        kwargs[key] = _coerce(value, hints[key], f.metadata, file=file, key=where, base=base)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), file=file, key=section) from exc


def _coerce(value: Any, tp: Any, meta: typing.Mapping[str, Any], *, file: Path, key: str, base: Path | None) -> Any:
    src = f" (from ${value.var})" if isinstance(value, _EnvValue) else ""

    def bad(reason: str) -> ConfigError:
        return ConfigError(reason + src, file=file, key=key)

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(value, _EnvValue) and value.text == "":
            return None
        if len(args) == 1:
            tp, origin = args[0], typing.get_origin(args[0])
        else:  # a union we do not parse: pass through, the dataclass decides
            return value.text if isinstance(value, _EnvValue) else value
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, _EnvValue):
            items: list[Any] = [s.strip() for s in value.text.split(",") if s.strip()]
        elif isinstance(value, list):
            items = value
        else:
            raise bad(f"expected a list, got {_tname(value)}")
        return tuple(_coerce(v, item, meta, file=file, key=f"{key}[{i}]", base=base) for i, v in enumerate(items))

    if isinstance(value, _EnvValue):
        value = _parse_env(value.text, tp, bad)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"expected an integer, got {value!r}")
        _check_range(value, meta, bad)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"expected a number, got {value!r}")
        _check_range(value, meta, bad)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad(f"expected a string, got {_tname(value)}")
        if not value and meta.get("topic"):
            raise bad("must not be empty")
        if meta.get("topic") and _TOPIC_FORBIDDEN & set(value):
            raise bad(f"{value!r} cannot be part of an MQTT topic: remove '/', '+', '#' and spaces")
        if "choices" in meta and value not in meta["choices"]:
            raise bad(f"{value!r} is not one of: {', '.join(meta['choices'])}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise bad(f"expected a path string, got {value!r}")
        p = Path(value).expanduser()
        if base is not None and not p.is_absolute():
            p = base / p
        return p
    # any other type (dicts, nested options): the owning dataclass validates it
    return value


def _parse_env(text: str, tp: Any, bad: typing.Callable[[str], ConfigError]) -> Any:
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise bad(f"expected true or false, got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise bad(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise bad(f"expected a number, got {text!r}") from None
    return text


def _check_range(value: float, meta: typing.Mapping[str, Any], bad: typing.Callable[[str], ConfigError]) -> None:
    if "min" in meta and value < meta["min"]:
        raise bad(f"{value} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise bad(f"{value} is above the maximum {meta['max']}")


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _check_runtime(values: dict[str, Any], file: Path) -> None:
    """[runtime] keys are RuntimeOptions' fields (except backend/threads, which live in [model])."""

    fields = {f.name: f for f in dataclasses.fields(RuntimeOptions) if f.init}
    hints = typing.get_type_hints(RuntimeOptions)
    for key, value in values.items():
        if key in ("backend", "threads"):
            raise ConfigError(f"set {key} in [model], not [runtime]", file=file, key=f"runtime.{key}")
        if key not in fields:
            known = sorted(set(fields) - {"backend", "threads"})
            raise ConfigError(f"unknown runtime option; known: {', '.join(known)}", file=file, key=f"runtime.{key}")
        values[key] = _coerce(value, hints[key], fields[key].metadata, file=file, key=f"runtime.{key}", base=None)
    try:
        RuntimeOptions.from_kwargs(**values)
    except ConfigError as exc:
        key = exc.key or "runtime"
        key = key if key.startswith("runtime") else f"runtime.{key}"
        raise ConfigError(exc.reason, file=file, key=key) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), file=file, key="runtime") from exc


def _pipelines(raw: Any, file: Path, base: Path) -> tuple[PipelineConfig, ...]:
    """``[[pipelines]]`` tables, each with an optional ``[pipelines.mqtt]`` of its own broker."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError("write pipelines as [[pipelines]] tables", file=file, key="pipelines")
    out: list[PipelineConfig] = []
    for i, table in enumerate(raw):
        where = f"pipelines[{i}]"
        values = dict(table)
        missing = [k for k in ("name", "input", "output") if k not in values]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (every pipeline needs name, input and output)",
                              file=file, key=where)
        if isinstance(values["input"], str):
            values["input"] = [values["input"]]
        if not isinstance(values.get("topic_fields", {}), dict):
            raise ConfigError("expected a table of feature = wildcard number", file=file, key=f"{where}.topic_fields")
        broker = values.pop("mqtt", None)
        if broker is not None:
            if not isinstance(broker, dict):
                raise ConfigError("must be a table ([pipelines.mqtt])", file=file, key=f"{where}.mqtt")
            values["mqtt"] = build_section(MqttConfig, broker, file=file, section=f"{where}.mqtt", base=base)
        p = build_section(PipelineConfig, values, file=file, section=where, base=base)
        compile_pipeline(p, file=file, where=where)
        if any(q.name == p.name for q in out):
            raise ConfigError(f"two pipelines are named {p.name!r}; names must differ", file=file,
                              key=f"{where}.name")
        out.append(p)
    return tuple(out)


def _check_cross(cfg: Config) -> None:
    if cfg.experiment is not None and cfg.experiment.candidate is None:
        raise ConfigError("an [experiment] needs candidate = the artifact directory to compare with the model "
                          "(or remove the section)", file=cfg.file, key="experiment.candidate")
    for i, p in enumerate(cfg.pipelines):
        if p.mqtt is None and cfg.mqtt is None:
            raise ConfigError(f"pipeline {p.name!r} needs a broker: add an [mqtt] section or a [pipelines.mqtt] "
                              "table under it", file=cfg.file, key=f"pipelines[{i}]")
    m = cfg.mqtt
    if m is None:
        return
    if m.reconnect_max_s < m.reconnect_min_s:
        raise ConfigError(f"reconnect_max_s ({m.reconnect_max_s}) is below reconnect_min_s ({m.reconnect_min_s})",
                          file=cfg.file, key="mqtt.reconnect_max_s")
    if (m.cert_file is None) != (m.key_file is None):
        raise ConfigError("a client certificate needs both cert_file and key_file", file=cfg.file,
                          key="mqtt.cert_file" if m.cert_file is None else "mqtt.key_file")
    if (m.ca_file or m.cert_file) and not m.tls:
        raise ConfigError("ca_file/cert_file are set but tls = false; set tls = true", file=cfg.file, key="mqtt.tls")
    if m.events_limit_mb < m.outbox_max_mb:
        raise ConfigError(f"outbox_events_max_mb ({m.events_limit_mb}) must be at least outbox_max_mb "
                          f"({m.outbox_max_mb})", file=cfg.file, key="mqtt.outbox_events_max_mb")


def _check_files(cfg: Config) -> None:
    sections = [(name, getattr(cfg, name)) for name in _SECTIONS]
    sections += [(f"pipelines[{i}].mqtt", p.mqtt) for i, p in enumerate(cfg.pipelines)]
    for name, section in sections:
        if section is None:
            continue
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if not f.metadata.get("exists") or value is None:
                continue
            for v in (value if isinstance(value, tuple) else (value,)):
                if not Path(v).exists():
                    raise ConfigError(f"{v} does not exist", file=cfg.file, key=f"{name}.{f.name}")
    m = cfg.mqtt
    if m is not None and m.password_file is not None:
        try:
            m.password_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the password file: {exc.strerror or exc}", file=cfg.file,
                              key="mqtt.password_file") from exc

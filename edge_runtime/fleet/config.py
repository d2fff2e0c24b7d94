"""The fleet config that ``publish``, ``rollback`` and ``update-server`` read.

    [fleet]
    name = "acme"
    data_dir = "/var/lib/edge-fleet"        # published artifacts, kept for update-server

    [mqtt]                                  # the same keys as a device's [mqtt]
    host = "broker.local"
    port = 8883
    tls = true

    [updates]
    deployment_key = "/etc/edge-fleet/deploy.key"     # signs desired states and commands
    artifact_keys = ["/etc/edge-fleet/artifact.pub"]  # publish checks manifest.sig with these (optional)
    chunk_size_kb = 128                               # MQTT chunk size (well under 1 MB)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_runtime.config import ENV_PREFIX, MqttConfig, build_section
from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class FleetSection:
    name: str = "default"
    data_dir: Path = Path("fleet-data")


@dataclass(frozen=True)
class FleetUpdates:
    deployment_key: Path | None = None
    artifact_keys: tuple[Path, ...] = ()
    chunk_size_kb: int = field(default=128, metadata={"min": 1, "max": 512})


@dataclass(frozen=True)
class FleetConfig:
    file: Path
    fleet: FleetSection
    mqtt: MqttConfig
    updates: FleetUpdates

    @property
    def chunk_size(self) -> int:
        return self.updates.chunk_size_kb * 1024


_SECTIONS: dict[str, type] = {"fleet": FleetSection, "mqtt": MqttConfig, "updates": FleetUpdates}


def load_fleet_config(path: str | Path) -> FleetConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found; pass a fleet config (see device_configs/fleet.toml)", file=path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=path) from exc
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(f"unknown section; known: {', '.join(_SECTIONS)}", file=path, key=name)
    base = path.resolve().parent
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name, {}))
        if name == "mqtt":  # the password only from the environment or password_file
            if "password" in values:
                raise ConfigError("do not put secrets in the config file; use password_file or "
                                  f"{ENV_PREFIX}MQTT_PASSWORD", file=path, key="mqtt.password")
            if f"{ENV_PREFIX}MQTT_PASSWORD" in os.environ:
                values["password"] = os.environ[f"{ENV_PREFIX}MQTT_PASSWORD"]
        sections[name] = build_section(cls, values, file=path, section=name, base=base)
    # an operator's tool: no persistent session, a client id of its own
    own_id = f"edge-fleet-{os.getpid()}-{os.urandom(3).hex()}"
    sections["mqtt"] = replace(sections["mqtt"], session_expiry_s=0, client_id=sections["mqtt"].client_id or own_id)
    return FleetConfig(file=path, **sections)

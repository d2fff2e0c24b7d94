"""Topic names: ``edge/{fleet}/devices/{id}/status|metrics|events|cmd|desired``,
``edge/{fleet}/groups/{group}/cmd|desired`` and ``edge/{fleet}/all/cmd|desired``; artifact
chunks under ``edge/{fleet}/artifacts/`` (``edge_runtime.updates.transfer``)."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "edge"
DEVICE_SUFFIXES = ("status", "metrics", "events", "cmd", "desired")


@dataclass(frozen=True)
class Topics:
    fleet: str
    device: str
    groups: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.fleet}/devices/{self.device}"

    def device_topic(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    @property
    def status(self) -> str:
        return self.device_topic("status")

    @property
    def metrics(self) -> str:
        return self.device_topic("metrics")

    @property
    def events(self) -> str:
        return self.device_topic("events")

    @property
    def cmd(self) -> str:
        return self.device_topic("cmd")

    def group_cmd(self, group: str) -> str:
        return f"{ROOT}/{self.fleet}/groups/{group}/cmd"

    @property
    def all_cmd(self) -> str:
        return f"{ROOT}/{self.fleet}/all/cmd"

    def cmd_topics(self) -> list[str]:
        """Every topic this device takes commands from."""
        return [self.cmd, *(self.group_cmd(g) for g in self.groups), self.all_cmd]

    def group_desired(self, group: str) -> str:
        return f"{ROOT}/{self.fleet}/groups/{group}/desired"

    @property
    def all_desired(self) -> str:
        return f"{ROOT}/{self.fleet}/all/desired"

    @property
    def keys(self) -> str:
        """Retained signed key-set document (key rotation) for the whole fleet."""
        return f"{ROOT}/{self.fleet}/keys"

    def desired_level(self, topic: str) -> str | None:
        """``device:ID``, ``group:G`` or ``all`` for one of this device's desired topics."""
        if topic == self.device_topic("desired"):
            return f"device:{self.device}"
        if topic == self.all_desired:
            return "all"
        return next((f"group:{g}" for g in self.groups if topic == self.group_desired(g)), None)

    def desired_topics(self) -> list[str]:
        """Every topic this device takes its desired state from (most specific first)."""
        return [self.device_topic("desired"), *(self.group_desired(g) for g in self.groups), self.all_desired]


def fleet_topics(fleet: str, group: str | None = None, device: str | None = None) -> tuple[str, str]:
    """(desired, cmd) topic of one target: a device, a group, or the whole fleet."""
    if device is not None:
        base = f"{ROOT}/{fleet}/devices/{device}"
    elif group is not None:
        base = f"{ROOT}/{fleet}/groups/{group}"
    else:
        base = f"{ROOT}/{fleet}/all"
    return f"{base}/desired", f"{base}/cmd"

"""Topic names (DESIGN.md, MQTT protocol): ``edge/{fleet}/devices/{id}/status|metrics|events|cmd``,
``edge/{fleet}/groups/{group}/cmd`` and ``edge/{fleet}/all/cmd``."""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "edge"
DEVICE_SUFFIXES = ("status", "metrics", "events", "cmd")


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

"""Which devices are in a step: ``sha256(rollout_id + device_id) mod 10,000 < p x 100``.

The hash of a device does not depend on the share, so a device that is in at 5% is still in at
25%: the canaries of a step are always a superset of the previous step's. At least one device is
in the first step of a group that has any, so a 1% step on a small group still tests something.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def slot(rollout_id: str, device: str) -> int:
    """The device's place in [0, 10,000) for this rollout."""
    return int.from_bytes(hashlib.sha256((rollout_id + device).encode()).digest(), "big") % 10_000


def in_step(rollout_id: str, device: str, percent: float) -> bool:
    return slot(rollout_id, device) < percent * 100


def members(rollout_id: str, devices: Iterable[str], percent: float) -> list[str]:
    """The devices in a step of ``percent``; at least one when there are any and percent > 0."""
    devs = sorted(set(devices))
    picked = [d for d in devs if in_step(rollout_id, d, percent)]
    if not picked and devs and percent > 0:
        picked = [min(devs, key=lambda d: (slot(rollout_id, d), d))]
    return picked

"""Reconnect backoff: capped, exponential, jittered (a fleet must not reconnect in lockstep)."""

from __future__ import annotations

import random

from edge_runtime.sync.mqtt import JitteredClient, backoff_delay
from edge_runtime.sync.topics import Topics


def test_backoff_grows_caps_and_jitters() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        d = min(60.0, 0.5 * 2**attempt)
        for _ in range(50):
            v = backoff_delay(attempt, 0.5, 60.0, rng)
            assert d / 2 <= v <= d
    late = {round(backoff_delay(30, 0.5, 60.0, rng), 3) for _ in range(100)}
    assert len(late) > 50 and max(late) <= 60.0  # spread out, and capped
    assert backoff_delay(10_000, 1.0, 5.0, rng) <= 5.0  # no overflow after a very long outage


def test_paho_still_has_the_wait_we_replace() -> None:
    # JitteredClient overrides paho's private _reconnect_wait; fail loudly if paho renames it
    import paho.mqtt.client as paho

    assert hasattr(paho.Client, "_reconnect_wait")
    assert JitteredClient._reconnect_wait is not paho.Client._reconnect_wait


def test_topics() -> None:
    t = Topics("acme", "pi-1", ("eu", "canary"))
    assert t.status == "edge/acme/devices/pi-1/status" and t.events == "edge/acme/devices/pi-1/events"
    assert t.cmd_topics() == ["edge/acme/devices/pi-1/cmd", "edge/acme/groups/eu/cmd",
                              "edge/acme/groups/canary/cmd", "edge/acme/all/cmd"]

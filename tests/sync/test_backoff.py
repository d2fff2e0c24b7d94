"""Reconnect backoff: capped, exponential, jittered (a fleet must not reconnect in lockstep)."""

from __future__ import annotations

import random

from edge_runtime.sync.mqtt import backoff_delay
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


def test_link_sets_a_jittered_growing_wait_before_each_reconnect(tmp_path) -> None:
    """paho waits right after on_disconnect / on_connect_fail; the link sets that wait through
    the public reconnect_delay_set, growing and capped, and starts over after a CONNACK."""
    from edge_runtime.config import MqttConfig
    from edge_runtime.sync.mqtt import MqttLink

    link = MqttLink(MqttConfig(host="127.0.0.1", port=1, tls=False, reconnect_min_s=0.5, reconnect_max_s=8.0),
                    client_id="t", will_topic="w", will_payload=b"x")
    waits: list[tuple[float, float]] = []
    link.client.reconnect_delay_set = lambda a, b: waits.append((a, b))  # type: ignore[method-assign]
    for _ in range(8):
        link._handle_connect_fail(link.client, None)
    assert all(a == b for a, b in waits)  # one exact wait, not paho's doubling
    bounds = [min(8.0, 0.5 * 2 ** (i + 1)) for i in range(8)]
    for (d, _), cap in zip(waits, bounds, strict=True):
        assert cap / 2 <= d <= cap
    assert link.state.last_error and "cannot reach" in link.state.last_error

    class RC:
        is_failure = False

    link._handle_connect(link.client, None, None, RC(), None)
    link._handle_disconnect(link.client, None, None, RC(), None)
    assert 0.25 <= waits[-1][0] <= 0.5  # back to the first step after an accepted connection
    link.client.loop_stop()


def test_topics() -> None:
    t = Topics("acme", "pi-1", ("eu", "canary"))
    assert t.status == "edge/acme/devices/pi-1/status" and t.events == "edge/acme/devices/pi-1/events"
    assert t.cmd_topics() == ["edge/acme/devices/pi-1/cmd", "edge/acme/groups/eu/cmd",
                              "edge/acme/groups/canary/cmd", "edge/acme/all/cmd"]

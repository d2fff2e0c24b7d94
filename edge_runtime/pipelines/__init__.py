"""MQTT-triggered inference: ``[[pipelines]]`` of the device config, run by the agent.

Pipelines on the device's broker share one MQTT session of their own (client id
``<client id>-pipelines``), apart from the agent's reporting session, so a flood of sensor data
never delays a command or an update; a pipeline with a ``[pipelines.mqtt]`` table gets its own
session to that broker (``<client id>-pipeline-<name>``). Sessions are persistent: QoS 1 input
sent while the device was away waits on the broker, and paho re-sends unacknowledged answers
after a reconnect. Pipelines score with the agent's ``Runtime``, so they keep running, on the
new model, across an update or a rollback.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from edge_runtime.config import Config, MqttConfig
from edge_runtime.pipelines.pipeline import COUNTERS, Pipeline, Report
from edge_runtime.runtime import Runtime
from edge_runtime.sync.mqtt import OK, MqttLink

__all__ = ["Pipeline", "Pipelines"]

log = logging.getLogger(__name__)
NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN  # a QoS 1/2 message is kept by paho and sent on reconnect


@dataclass
class _Session:
    """One MQTT session and the pipelines it feeds."""

    cfg: MqttConfig
    client_id: str
    pipelines: list[Pipeline] = field(default_factory=list)
    link: MqttLink | None = None
    unacked: collections.deque[Any] = field(default_factory=collections.deque)  # MQTTMessageInfo, oldest first
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def limit(self) -> int:
        return max(p.cfg.queue_max for p in self.pipelines)

    def on_connect(self) -> None:
        assert self.link is not None
        qos: dict[str, int] = {}
        for p in self.pipelines:
            for f in p.cfg.input:
                qos[f] = max(qos.get(f, 0), p.cfg.qos)
        self.link.subscribed.clear()
        self.link.client.subscribe([(f, q) for f, q in qos.items()])

    def on_message(self, topic: str, payload: bytes, ack: Any) -> None:
        ack()  # accepted: queued in memory, its answer is published at the pipeline's QoS
        for p in self.pipelines:
            if p.captures(topic) is not None:
                p.offer(topic, payload)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """Hand an answer to paho; with QoS 1/2 wait while ``limit`` answers are unacknowledged."""
        assert self.link is not None
        if qos > 0:
            while True:
                with self.lock:
                    while self.unacked and self.unacked[0].is_published():
                        self.unacked.popleft()
                    if len(self.unacked) < self.limit or self.stopped.is_set():
                        break
                time.sleep(0.005)
        info = self.link.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == OK or (qos > 0 and info.rc == NO_CONN):
            if qos > 0:
                with self.lock:
                    self.unacked.append(info)
            return True
        return False


class Pipelines:
    """Every ``[[pipelines]]`` of a config, started and stopped together."""

    def __init__(self, cfg: Config, runtime: Runtime, report: Report) -> None:
        self.sessions: list[_Session] = []
        shared: _Session | None = None
        for p in cfg.pipelines:
            if p.mqtt is not None:
                s = _Session(p.mqtt, f"{cfg.client_id}-pipeline-{p.name}")
                self.sessions.append(s)
            else:
                assert cfg.mqtt is not None  # the config check says a pipeline needs a broker
                if shared is None:
                    shared = _Session(cfg.mqtt, f"{cfg.client_id}-pipelines")
                    self.sessions.append(shared)
                s = shared
            s.pipelines.append(Pipeline(p, runtime, s.publish, report, device=cfg.device.id))

    @property
    def all(self) -> list[Pipeline]:
        return [p for s in self.sessions for p in s.pipelines]

    def start(self) -> None:
        for s in self.sessions:
            for p in s.pipelines:
                p.start()
            s.link = MqttLink(s.cfg, client_id=s.client_id, on_connect=s.on_connect, on_message=s.on_message)
            s.link.start()
            log.info("pipelines %s on %s:%d", ", ".join(p.cfg.name for p in s.pipelines), s.cfg.host, s.cfg.port)

    def stop(self, timeout: float = 3.0) -> None:
        end = time.monotonic() + timeout
        for s in self.sessions:
            s.stopped.set()
            for p in s.pipelines:
                p.stop(max(0.1, end - time.monotonic()))
            if s.link is not None:
                try:
                    s.link.stop(timeout=max(0.1, end - time.monotonic()))
                except Exception:
                    log.exception("closing the pipelines' MQTT session failed")

    def snapshot(self) -> dict[str, Any]:
        """``{"<name>": {"received", "published", "filtered", "bad", "dropped", "limited",
        "errors", "queued", "latency_ms": {"p50", "p99"}}}``, counters cumulative since start."""
        return {p.cfg.name: p.snapshot() for p in self.all}

    def collect(self) -> Iterator[Any]:
        """Prometheus families (a ``prometheus_client`` custom collector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        msgs = CounterMetricFamily("edge_pipeline_messages", "MQTT pipeline messages by what became of them",
                                   labels=["pipeline", "outcome"])
        lat = GaugeMetricFamily("edge_pipeline_latency_ms", "Receive to publish, recent window",
                                labels=["pipeline", "quantile"])
        queued = GaugeMetricFamily("edge_pipeline_queued", "Messages waiting to be scored", labels=["pipeline"])
        for name, snap in self.snapshot().items():
            for c in COUNTERS:
                msgs.add_metric([name, c], snap[c])
            for q in ("p50", "p99"):
                if snap["latency_ms"][q] is not None:
                    lat.add_metric([name, q], snap["latency_ms"][q])
            queued.add_metric([name], snap["queued"])
        yield msgs
        yield lat
        yield queued


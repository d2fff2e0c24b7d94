"""The MQTT connection: paho-mqtt 2.x, MQTT 5, Last Will, TLS, auth, reconnect forever.

paho's own network thread (``loop_start``) reconnects forever after any failure, but its
backoff doubles without jitter, so a fleet that lost its broker would come back in lockstep.
Before every wait paho calls us back (``on_disconnect`` or ``on_connect_fail``); there we set
the next wait through the public ``reconnect_delay_set(d, d)`` to an "equal jitter" delay
(half the capped exponential delay fixed, half random). Everything else is paho's, including
re-sending unacknowledged QoS 1 messages after a reconnect.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.config import MqttConfig
from edge_runtime.errors import ConfigError

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before reconnect ``attempt`` (0-based): in [d/2, d] with d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 32)))
    return d / 2 + (rng or random).uniform(0, d / 2)


@dataclass
class LinkState:
    connected: bool = False
    since: float = 0.0
    connects: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


class MqttLink:
    """One MQTT 5 session to the broker for a device.

    ``on_connect()``, ``on_disconnect()``, ``on_publish(mid, ok)`` and ``on_message(topic,
    payload, ack)`` run on paho's network thread: keep them short. ``ack()`` acknowledges the
    message to the broker; call it once the message is handled (or refused for good), in the
    order messages arrived.
    """

    def __init__(self, cfg: MqttConfig, *, client_id: str, will_topic: str | None = None, will_payload: bytes = b"",
                 on_connect: Callable[[], None] | None = None, on_disconnect: Callable[[], None] | None = None,
                 on_publish: Callable[[int, bool, str], None] | None = None,
                 on_message: Callable[[str, bytes, Callable[[], None]], None] | None = None) -> None:
        self.cfg = cfg
        self.state = LinkState()
        self._on_connect, self._on_disconnect = on_connect, on_disconnect
        self._on_publish, self._on_message = on_publish, on_message
        self._connected_evt = threading.Event()
        self.subscribed = threading.Event()  # set when the broker granted the last subscribe
        self.attempt = 0  # failed attempts since the last accepted connection
        # manual acknowledgement: a command is acknowledged (PUBACK) only once the agent has
        # handled it, so a crash mid-command makes the broker deliver it again after a restart
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                        manual_ack=on_message is not None)
        # our publisher keeps its own window; paho's must be at least as large so it never
        # parks a message as "queued" (paho re-sends those less reliably after a reconnect)
        c.max_inflight_messages_set(cfg.inflight + 32)
        c.max_queued_messages_set(0)
        if will_topic is not None:
            c.will_set(will_topic, will_payload, qos=1, retain=True)
        if cfg.username is not None or cfg.read_password() is not None:
            c.username_pw_set(cfg.username or "", cfg.read_password())
        if cfg.tls:
            try:
                c.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                          certfile=str(cfg.cert_file) if cfg.cert_file else None,
                          keyfile=str(cfg.key_file) if cfg.key_file else None,
                          cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"cannot use the TLS files: {exc}", key="mqtt.ca_file") from exc
        c.on_connect = self._handle_connect
        c.on_connect_fail = self._handle_connect_fail
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        c.on_message = self._handle_message
        c.on_subscribe = self._handle_subscribe
        self.client = c
        self._arm_backoff()

    def _arm_backoff(self) -> None:
        """Set paho's next reconnect wait to a jittered delay (paho waits right after our callback)."""
        d = backoff_delay(self.attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        self.attempt += 1
        self.client.reconnect_delay_set(d, d)  # type: ignore[arg-type]  # paho accepts float seconds
        if self.attempt > 1:
            log.info("reconnecting to the broker in %.2f s (attempt %d)", d, self.attempt - 1)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        # clean_start False: commands sent while the device was away wait for it on the broker
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self, *, final_topic: str | None = None, final_payload: bytes | None = None,
             timeout: float = 2.0) -> None:
        """Publish a last retained message (the clean "offline" status), then disconnect."""
        try:
            if final_topic is not None and final_payload is not None and self.state.connected:
                info = self.client.publish(final_topic, final_payload, qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.warning("final status not confirmed: %s", exc)
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected_evt.wait(timeout)

    @property
    def connected(self) -> bool:
        return self.state.connected

    # -- sending ------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        if topics:
            self.subscribed.clear()
            self.client.subscribe([(t, qos) for t in topics])

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _handle_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._error(f"broker refused the connection: {reason_code}")
            return
        self.attempt = 0
        _no_delay(client)
        self.state.connected = True
        self.state.since = time.time()
        self.state.connects += 1
        self._connected_evt.set()
        log.info("connected to %s:%d (session present: %s)", self.cfg.host, self.cfg.port,
                 getattr(flags, "session_present", "?"))
        if self._on_connect:
            self._on_connect()

    def _handle_connect_fail(self, client: Any, userdata: Any) -> None:
        self._error(f"cannot reach {self.cfg.host}:{self.cfg.port}")
        self._arm_backoff()

    def _handle_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.state.connected
        self.state.connected = False
        self.state.since = time.time()
        self._connected_evt.clear()
        if was:
            if getattr(reason_code, "is_failure", False):
                log.warning("disconnected from the broker: %s", reason_code)
                self._error(f"disconnected: {reason_code}")
            else:  # our own disconnect at stop
                log.info("disconnected from the broker: %s", reason_code)
        else:  # closed before a CONNACK: TLS refused, bad credentials, broker shutting down
            self._error(f"connection to {self.cfg.host}:{self.cfg.port} closed before it was accepted: {reason_code}")
        self._arm_backoff()
        if self._on_disconnect:
            self._on_disconnect()

    def _handle_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        ok = not getattr(reason_code, "is_failure", False)
        if self._on_publish:
            self._on_publish(mid, ok, str(reason_code))

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            self._error(f"broker refused a command subscription: {', '.join(refused)}")
        self.subscribed.set()

    def _handle_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        mid, qos = msg.mid, msg.qos

        def ack() -> None:
            if qos > 0:
                client.ack(mid, qos)

        if self._on_message:
            try:
                self._on_message(msg.topic, bytes(msg.payload), ack)
            except Exception:  # a bad command must never kill the network thread
                log.exception("command handler failed on %s", msg.topic)
                ack()

    def _error(self, text: str) -> None:
        log.warning("%s", text)
        self.state.last_error = text
        self.state.last_error_at = time.time()


def _no_delay(client: paho.Client) -> None:
    """Send small packets (acks, chunk requests) at once instead of waiting for Nagle's
    algorithm: with delayed ACKs that costs ~40 ms per round trip on an idle link."""
    sock = client.socket()
    try:
        if sock is not None and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


OK = MQTTErrorCode.MQTT_ERR_SUCCESS

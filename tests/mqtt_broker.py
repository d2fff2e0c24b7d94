"""A real Mosquitto for tests: own config, free port, kill -9 and restart on the same port;
TLS certificates made with ``cryptography``; a collecting MQTT subscriber."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def wait_for(pred: Callable[[], Any], timeout: float, what: str = "condition", step: float = 0.02) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Broker:
    """One mosquitto process with a config written by the test."""

    workdir: Path
    port: int = field(default_factory=free_port)
    tls: dict[str, Path] | None = None  # cafile, certfile, keyfile; require_certificate if "clients"
    require_certificate: bool = False
    acl_file: Path | None = None
    password_file: Path | None = None
    persistence: bool = True
    save_every_change: bool = True  # False: save at a clean stop only, for throughput tests
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = ["user root", "per_listener_settings false", "set_tcp_nodelay true",
                 f"listener {self.port} 127.0.0.1"]
        if self.tls:
            lines += [f"cafile {self.tls['cafile']}", f"certfile {self.tls['certfile']}",
                      f"keyfile {self.tls['keyfile']}", "tls_version tlsv1.2",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence:
            # save after every change, so kill -9 loses nothing the broker acknowledged
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
            if self.save_every_change:
                lines += ["autosave_on_changes true", "autosave_interval 1"]
        lines += ["max_queued_messages 100000", "max_inflight_messages 0", "log_type error",
                  "log_type warning", "log_type notice", "log_type information", "connection_messages true"]
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path

    def start(self) -> Broker:
        self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=log)
        log.close()
        try:
            wait_port(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log_path.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        """kill -9: no clean shutdown, no final save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def no_delay(client: Any) -> None:
    """TCP_NODELAY on a paho client's socket (call from on_connect): without it every small
    packet can wait ~40 ms for Nagle's algorithm against delayed ACKs."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Collector:
    """A paho subscriber that keeps every message; persistent session so it misses nothing while
    the broker restarts."""

    def __init__(self, port: int, topics: list[str], *, tls: dict[str, Path] | None = None,
                 username: str | None = None, password: str | None = None, client_id: str | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topics = topics
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
                        protocol=paho.MQTTv5)
        c.reconnect_delay_set(0.05, 0.5)
        if tls:
            c.tls_set(ca_certs=str(tls["cafile"]), certfile=str(tls["certfile"]) if "certfile" in tls else None,
                      keyfile=str(tls["keyfile"]) if "keyfile" in tls else None)
        if username:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect_async("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            no_delay(client)
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_subscribed(self, timeout: float = 10.0) -> Collector:
        if not self.subscribed.wait(timeout):
            raise AssertionError("the collector could not subscribe")
        return self

    def json(self, suffix: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            msgs = list(self.messages)
        return [json.loads(p) for t, p, _ in msgs if suffix is None or t.endswith("/" + suffix)]

    def ids(self, suffix: str | None = None) -> set[str]:
        return {d["id"] for d in self.json(suffix) if "id" in d}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- certificates ---------------------------------------------------------------------------------
def make_certs(d: Path, *, clients: tuple[str, ...] = ("device-1",)) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1, and one client certificate per name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(path: Path, obj: Any) -> Path:
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return path

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("edge-test-ca")).issuer_name(name("edge-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(ca_key, hashes.SHA256()), k

    out = {"cafile": save(d / "ca.crt", ca)}
    srv, srv_key = leaf("localhost", True)
    out["certfile"], out["keyfile"] = save(d / "server.crt", srv), save(d / "server.key", srv_key)
    for cn in clients:
        c, k = leaf(cn, False)
        out[f"{cn}.crt"], out[f"{cn}.key"] = save(d / f"{cn}.crt", c), save(d / f"{cn}.key", k)
    return out


# -- device agent helpers -----------------------------------------------------------------------
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_agent_config(path: Path, *, port: int, artifact: Path, data_dir: Path, device: str = "dev-1",
                       fleet: str | None = None, groups: tuple[str, ...] = (), runtime: dict[str, Any] | None = None,
                       updates: dict[str, Any] | None = None, extra: str = "", **mqtt: Any) -> Path:
    """A device config for tests: short intervals, fast reconnects, the test broker; ``extra``
    is TOML appended as is (``[[pipelines]]`` tables)."""
    fleet = fleet or f"t{uuid.uuid4().hex[:8]}"
    m = {"host": "127.0.0.1", "port": port, "metrics_interval_s": 60, "heartbeat_interval_s": 60,
         "reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "keepalive_s": 5, "shutdown_flush_s": 3, **mqtt}
    lines = ["[device]", f"id = {toml_value(device)}", f"fleet = {toml_value(fleet)}",
             f"groups = {toml_value(list(groups))}", f"data_dir = {toml_value(data_dir)}",
             "[model]", f"artifact = {toml_value(artifact)}", "[mqtt]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in m.items()]
    if runtime:
        lines += ["[runtime]", *(f"{k} = {toml_value(v)}" for k, v in runtime.items())]
    if updates:
        lines += ["[updates]", *(f"{k} = {toml_value(v)}" for k, v in updates.items())]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def start_agent_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``python -m edge_runtime run --config CONFIG`` as a real process, as a device runs it."""
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(config)],
                                stdout=f, stderr=f, env=env, cwd=root)


def outbox_rows(db: Path) -> list[tuple[str, str]]:
    """(id, kind) of every message waiting in an agent's outbox, read from its file."""
    import sqlite3

    if not db.exists():
        return []
    c = sqlite3.connect(db, timeout=5)
    try:
        return [(r[0], r[1]) for r in c.execute("SELECT id, kind FROM outbox ORDER BY seq")]
    except sqlite3.OperationalError:  # the agent is still creating it
        return []
    finally:
        c.close()

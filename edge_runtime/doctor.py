"""``edge-runtime doctor``: can this device run? One line per check, in order, each with the fix.

    OK   config: /etc/edge-runtime/device.toml (device pi-01, fleet acme)
    FAIL broker credentials: the broker refused pi-01 (Not authorized); check [mqtt] username and password_file
    WARN clock: ...

A FAIL means the agent cannot do its job (exit 1); WARN is worth a look. The broker is reached
with client id ``<device id>-doctor``, so a running agent is not disconnected.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError

MIN_FREE_MB = 50


@dataclass
class Check:
    level: str  # OK | WARN | FAIL
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def run_checks(config: str | Path, *, timeout_s: float = 5.0) -> Iterator[Check]:
    """The checks, in order; stops early only when the config itself cannot be read."""
    from edge_runtime.config import load_config

    try:
        cfg = load_config(config)
    except EdgeRuntimeError as exc:
        yield Check("FAIL", "config", f"{exc} (fix the file; every key is described in device_configs/)")
        return
    yield Check("OK", "config", f"{cfg.file} (device {cfg.device.id}, fleet {cfg.device.fleet})")
    yield _data_dir(cfg)
    yield from _model(cfg)
    yield from _broker(cfg, timeout_s)
    yield from _pipelines(cfg, timeout_s)
    yield _clock(cfg)
    yield _outbox(cfg)


def _data_dir(cfg: Any) -> Check:
    d = Path(cfg.device.data_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check("FAIL", "data dir", f"{d} is not writable ({exc.strerror or exc}); create it and give the "
                     "agent's user write access (chown), or set [device] data_dir")
    free = shutil.disk_usage(d).free / 2**20
    if free < MIN_FREE_MB:
        return Check("WARN", "data dir", f"{d}: only {free:.0f} MB free; updates need twice the model's size and "
                     "the outbox up to outbox_max_mb: free some space")
    return Check("OK", "data dir", f"{d} writable, {free:,.0f} MB free")


def _model(cfg: Any) -> Iterator[Check]:
    from edge_runtime.errors import ModelLoadError, TrustError
    from edge_runtime.manifest import verify_artifact
    from edge_runtime.store import resolve_artifact
    from edge_runtime.updates.trust import KeyRing

    try:
        path = resolve_artifact(cfg.device.data_dir, cfg.model.artifact)
        m = verify_artifact(path)
    except ModelLoadError as exc:
        yield Check("FAIL", "artifact", f"{exc.reason} ({exc.path}); {exc.hint or 'copy the artifact again'}")
        return
    yield Check("OK", "artifact", f"{m.name} version {m.version} at {path}, sha256 verified")
    u = cfg.updates
    try:
        ring = KeyRing.from_paths(both=u.public_keys, artifact=u.artifact_keys, deployment=u.deployment_keys)
    except EdgeRuntimeError as exc:
        yield Check("FAIL", "signature", f"{exc}; fix the key paths in [updates]")
        return
    if ring.artifact:
        try:
            kid = ring.verify_artifact(path)
            yield Check("OK", "signature", f"manifest.sig valid (artifact key {kid[:16]})")
        except TrustError as exc:
            yield Check("FAIL", "signature", f"{exc.reason}: the agent refuses to load it; sign it with "
                        "edge-runtime sign DIR --key ARTIFACT_KEY, or fix [updates] artifact_keys")
    else:
        yield Check("WARN", "signature", "no artifact keys in [updates]: artifacts are not checked and no update "
                    "can be accepted; add artifact_keys and deployment_keys (edge-runtime keygen)")
    try:
        from edge_runtime.loading import load

        with load(path, **cfg.runtime_options()) as rt:
            h = rt.health()
            if not h["ready"]:
                yield Check("FAIL", "model", f"loaded but not ready: {', '.join(h['reasons'])}")
                return
        yield Check("OK", "model", f"{m.backend} backend loads it and the smoke test passes")
    except ImportError as exc:
        extra = "[tflite]" if m.backend == "tflite" else ""
        yield Check("FAIL", "backend", f"{exc.name} is not installed: pip install 'edge-runtime{extra}'")
    except EdgeRuntimeError as exc:
        yield Check("FAIL", "model", f"{exc}")


def _broker(cfg: Any, timeout_s: float) -> Iterator[Check]:
    m = cfg.mqtt
    if m is None:
        yield Check("WARN", "broker", "no [mqtt] section: the agent serves locally and reports nothing")
        return
    check = _reach(m, "broker", "[mqtt]", timeout_s)
    yield check
    if check.level == "OK":
        yield from _mqtt_session(cfg, timeout_s)


def _reach(m: Any, name: str, section: str, timeout_s: float) -> Check:
    """TCP, then TLS when configured, to one broker."""
    where = f"{m.host}:{m.port}"
    try:
        with socket.create_connection((m.host, m.port), timeout=timeout_s) as sock:
            if m.tls:
                ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
                if m.cert_file:
                    ctx.load_cert_chain(str(m.cert_file), str(m.key_file))
                with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
                    return Check("OK", name, f"{where} reachable, TLS {tls.version()} handshake accepted")
            return Check("OK", name, f"{where} reachable (plain MQTT: use tls = true beyond a lab)")
    except ssl.SSLError as exc:
        return Check("FAIL", f"{name} TLS", f"{where}: {exc.reason or exc}; check {section} ca_file (the broker's "
                     "CA), cert_file/key_file, and that the certificate names the host")
    except OSError as exc:
        return Check("FAIL", name, f"cannot reach {where} ({exc.strerror or exc}); check {section} host and port, "
                     "the network, and that the broker runs")


def _pipelines(cfg: Any, timeout_s: float) -> Iterator[Check]:
    """Each pipeline's broker: the device's (checked above) or its own [pipelines.mqtt]."""
    shared = [p.name for p in cfg.pipelines if p.mqtt is None]
    if shared:
        yield Check("OK", "pipelines", f"{', '.join(shared)} on the device's broker (client id "
                    f"{cfg.client_id}-pipelines)")
    for i, p in enumerate(cfg.pipelines):
        if p.mqtt is not None:
            yield _reach(p.mqtt, f"pipeline {p.name} broker", f"[pipelines.mqtt] of pipelines[{i}]", timeout_s)


def _mqtt_session(cfg: Any, timeout_s: float) -> Iterator[Check]:
    """Connect as the device (another client id), then check its own topics against the ACL."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_runtime.sync.topics import Topics

    m = cfg.mqtt
    topics = Topics(cfg.device.fleet, cfg.device.id, tuple(cfg.device.groups))
    got: dict[str, Any] = {}
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-doctor", protocol=paho.MQTTv5)
    if m.username is not None or m.read_password() is not None:
        c.username_pw_set(m.username or "", m.read_password())
    if m.tls:
        c.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                  certfile=str(m.cert_file) if m.cert_file else None,
                  keyfile=str(m.key_file) if m.key_file else None)

    def answer(key: str) -> Callable[..., None]:
        def cb(*args: Any) -> None:
            got.setdefault(key, args[3])  # paho 2: (client, userdata, flags or mid, reason code(s), props)
            done.set()

        return cb

    c.on_connect = answer("connack")
    c.on_subscribe = answer("suback")
    c.on_publish = answer("puback")
    try:
        c.connect(m.host, m.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        yield Check("FAIL", "broker credentials", f"cannot open an MQTT session: {exc}")
        return
    c.loop_start()
    try:
        if not _wait(done, "connack", got, timeout_s):
            yield Check("FAIL", "broker credentials", f"no answer to CONNECT in {timeout_s:.0f} s")
            return
        rc = got["connack"]
        if rc.is_failure:
            yield Check("FAIL", "broker credentials", f"the broker refused {cfg.device.id} ({rc}); check [mqtt] "
                        "username, password_file (or EDGE_MQTT_PASSWORD) and the client certificate")
            return
        yield Check("OK", "broker credentials", f"session accepted for {cfg.device.id}")
        wanted = topics.cmd_topics() + topics.desired_topics()
        done.clear()
        c.subscribe([(t, 1) for t in wanted])
        refused: list[str] = []
        if _wait(done, "suback", got, timeout_s):
            refused = [t for t, r in zip(wanted, got["suback"], strict=False) if getattr(r, "is_failure", False)]
        done.clear()
        probe = {"id": uuid.uuid4().hex, "device": cfg.device.id, "fleet": cfg.device.fleet, "ts": time.time(),
                 "type": "doctor_check"}
        c.publish(topics.events, json.dumps(probe), qos=1)
        if _wait(done, "puback", got, timeout_s) and getattr(got["puback"], "is_failure", False):
            refused.append(topics.events)
        if refused:
            yield Check("FAIL", "broker ACL", f"not allowed on {', '.join(refused)}; grant the device its own topics "
                        "(scripts/mosquitto/edge-runtime.acl shows the patterns; the MQTT username must be the "
                        "device id for its %u lines)")
        else:
            yield Check("OK", "broker ACL", f"may write its events; its {len(wanted)} cmd/desired subscriptions were "
                        "granted (Mosquitto grants a subscription its ACL denies without saying so: check the "
                        "device's group lines there)")
    finally:
        c.disconnect()
        c.loop_stop()


def _wait(done: threading.Event, key: str, got: dict[str, Any], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while key not in got and time.monotonic() < end:
        done.wait(0.05)
    return key in got


def _clock(cfg: Any) -> Check:
    now = dt.datetime.now(dt.UTC)
    if now.year < 2025:
        return Check("FAIL", "clock", f"the system clock says {now:%Y-%m-%d}: TLS certificates and signed updates "
                     "are checked against it; enable NTP (timedatectl set-ntp true) or add an RTC")
    m = cfg.mqtt
    if m is not None and m.tls and m.cert_file:
        try:
            from cryptography import x509

            cert = x509.load_pem_x509_certificate(Path(m.cert_file).read_bytes())
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return Check("FAIL", "clock", f"{now:%Y-%m-%d %H:%M}Z is outside the client certificate's validity "
                             f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}): "
                             "fix the clock or renew the certificate")
            left = (cert.not_valid_after_utc - now).days
            if left < 30:
                return Check("WARN", "clock", f"the client certificate expires in {left} days: renew it")
        except (OSError, ValueError) as exc:
            return Check("WARN", "clock", f"cannot read {m.cert_file} to check its dates: {exc}")
    return Check("OK", "clock", f"{now:%Y-%m-%d %H:%M:%S}Z")


def _outbox(cfg: Any) -> Check:
    from edge_runtime.agent.reporter import OUTBOX_FILE

    p = Path(cfg.device.data_dir) / OUTBOX_FILE
    if not p.exists():
        return Check("OK", "outbox", "none yet (created at the first start)")
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=2)
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            depth, oldest = db.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check("WARN", "outbox", f"{p} is unreadable ({exc}); the agent salvages it and starts a new one")
    if ok != "ok":
        return Check("WARN", "outbox", f"{p} fails its integrity check ({ok}); the agent salvages what it can")
    age = f", oldest {time.time() - oldest:,.0f} s old" if oldest else ""
    return Check("OK" if depth < 10000 else "WARN", "outbox", f"{depth} message(s) waiting{age}")


def report(config: str | Path, out: Callable[[str], None] = print, *, timeout_s: float = 5.0) -> int:
    """Print every check; 0 when none failed, 1 otherwise."""
    failed = False
    for c in run_checks(config, timeout_s=timeout_s):
        out(c.line())
        failed |= c.level == "FAIL"
    return 1 if failed else 0

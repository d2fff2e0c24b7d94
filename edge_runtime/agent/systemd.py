"""systemd's notify protocol, for ``Type=notify`` units: READY=1 once the agent serves,
WATCHDOG=1 from its main loop while it is healthy, STOPPING=1 on SIGTERM. Without systemd
(no ``NOTIFY_SOCKET``) every call is a no-op.

The protocol is one datagram on a Unix socket (sd_notify(3)); it is written here rather than
taken from a library because the maintained binding (systemd-python) needs libsystemd headers
to build on a device and the pure-Python ones are unmaintained.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not under systemd or it fails."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None when no watchdog
    is asked for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec), 1) / 2e6
    except ValueError:
        return None


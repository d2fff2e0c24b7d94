"""The local HTTP API (``edge-runtime serve``, ``[http]`` extra).

FastAPI and uvicorn are imported only inside these functions (and ``edge_runtime.http.app``),
so importing this package costs nothing on a device without the extra.

    server = edge_runtime.http.start_background(rt, port=8080)   # the device agent does this
    server.url, server.port
    server.stop()
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["BackgroundServer", "bind", "start_background"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), or a ConfigError saying why not."""
    from edge_runtime.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the HTTP API cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(another program on that port? choose another port)", key="http.port") from exc
    return sock


class BackgroundServer:
    """A uvicorn server for one Runtime on a daemon thread.

    The listening socket is bound here, before the thread starts, so a port in use is a
    clear error at once and ``port=0`` picks a free port that ``.port`` then tells.
    """

    def __init__(self, runtime: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        import uvicorn

        from edge_runtime.http.app import create_asgi

        sock = bind(host, port)
        self._sock = sock
        self.host, self.port = host, int(sock.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(create_asgi(runtime), log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="edge-http",
                                        daemon=True)

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        from edge_runtime.errors import ConfigError

        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(f"the HTTP API could not start on {self.host}:{self.port}", key="http.port")
            if time.monotonic() > end:
                raise ConfigError(f"the HTTP API did not start on {self.host}:{self.port} within {timeout:g} s",
                                  key="http.port")
            time.sleep(0.02)
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()


def start_background(runtime: Any, *, host: str = "127.0.0.1", port: int = 8080) -> BackgroundServer:
    """Serve ``runtime`` over HTTP from a daemon thread; returns once the port accepts requests."""
    return BackgroundServer(runtime, host, port).start()

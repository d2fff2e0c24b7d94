"""The local HTTP API (``edge-runtime serve``, ``[http]`` extra).

FastAPI and uvicorn are imported only inside these functions (and ``edge_runtime.http.app``),
so importing this package costs nothing on a device without the extra.

    server = edge_runtime.http.start_background(rt, port=8080)   # the device agent does this
    server.url, server.port
    server.stop()
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["BackgroundServer", "start_background"]


class BackgroundServer:
    """A uvicorn server for one Runtime on a daemon thread."""

    def __init__(self, runtime: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        import socket

        import uvicorn

        from edge_runtime.http.app import create_app

        if port == 0:  # pick a free port now so the caller learns it
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(uvicorn.Config(create_app(runtime), host=host, port=port,
                                                     log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, name="edge-http", daemon=True)

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        from edge_runtime.errors import ConfigError

        self._thread.start()
        end = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(f"the HTTP API could not start on {self.host}:{self.port} (port in use?)",
                                  key="http.port")
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


def start_background(runtime: Any, *, host: str = "127.0.0.1", port: int = 8080) -> BackgroundServer:
    """Serve ``runtime`` over HTTP from a daemon thread; returns once the port accepts requests."""
    return BackgroundServer(runtime, host, port).start()

"""edge-runtime serve DIR|DEVICE_CONFIG [--port N]"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve", help="serve the local HTTP API (needs the [http] extra)",
        description="Serve POST /predict, POST /predict/batch, GET /health, /ready, /metrics and "
        "/openapi.json for one model. With a device config, the [runtime] options and the [http] "
        "port and host apply; flags override them.",
        epilog="example: edge-runtime serve artifacts/iris --port 8080\n"
        "         curl -s localhost:8080/predict -d '{\"features\": {\"x\": 1.5}}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="DIR|DEVICE_CONFIG", help="artifact directory or device config (.toml)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: the config's [http] port, else 8080)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this device only)")
    p.add_argument("--threads", type=int, default=1, help="inference threads for an artifact dir (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.errors import ConfigError

    try:
        import uvicorn

        from edge_runtime.http import bind
        from edge_runtime.http.app import create_asgi
    except ImportError as exc:
        raise ConfigError(f"the HTTP API needs the [http] extra ({exc.name} is not installed); "
                          "pip install 'edge-runtime[http]'") from exc
    import edge_runtime

    port, host = args.port, args.host
    if str(args.target).endswith(".toml"):
        from edge_runtime.config import load_config

        cfg = load_config(args.target)
        rt = edge_runtime.load(config=args.target)  # the version the agent serves, as predict CONFIG
        if cfg.http is not None:
            port = cfg.http.port if port is None else port
            host = cfg.http.host if host is None else host
    else:
        rt = edge_runtime.load(args.target, threads=args.threads)
    port = 8080 if port is None else port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0-65535)")
    host = host or "127.0.0.1"
    sock = bind(host, port)  # bound here: a port in use is a clear error, and --port 0 tells its port
    port = int(sock.getsockname()[1])
    health = rt.health()
    print(f"edge-runtime serve: http://{host}:{port} model version {rt.model_version} "
          f"({'ready' if health['ready'] else 'NOT READY: ' + '; '.join(health['reasons'])})", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(create_asgi(rt), log_level="warning", access_log=False)).run(sockets=[sock])
    finally:
        sock.close()
        rt.close()
    return 0

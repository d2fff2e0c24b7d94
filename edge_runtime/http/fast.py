"""``POST /predict`` and ``/predict/batch`` answered by a thin ASGI handler in front of the
FastAPI app, which keeps everything else (health, ready, metrics, OpenAPI, docs, every error).

Per request FastAPI spends far more than a small model does: routing and middleware, pydantic
on the way in and out, and a thread-pool hop for a sync endpoint. This handler parses the body
with orjson, checks the same shape the FastAPI models declare, predicts on the event loop when
predictions are quick (no thread hop; the Runtime's recent latency decides, and ``timeout_ms``
or micro-batching always go to a worker thread), and writes the same JSON the FastAPI endpoint
writes. Any request it would have to judge differently from FastAPI (a body that is not JSON
to orjson, a shape the models refuse, another content type) is replayed to the FastAPI app, so
error bodies and status codes stay exactly FastAPI's.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from edge_runtime.errors import BackendError, EdgeRuntimeError, InvalidInput, echo
from edge_runtime.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INLINE_MAX_S = 0.0003  # predictions slower than this (recent average) run on a worker thread
MAX_BATCH = 10000
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPredict:
    """ASGI app: the two predict routes here, the rest (and anything unusual) to ``app``."""

    def __init__(self, rt: Runtime, app: ASGIApp) -> None:
        self.rt = rt
        self.app = app
        opts = rt.options
        self.always_thread = bool(opts.timeout_ms) or opts.microbatch_max_size > 0
        self.avg_s = 0.0  # recent seconds per predict call (exponential average)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in ("/predict", "/predict/batch"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        doc = _json_body(scope, body)
        call = None
        if doc is not None:
            call = _predict_call(self.rt, doc) if path == "/predict" else _batch_call(self.rt, doc)
        if call is None:  # FastAPI judges it, with the body replayed
            await self.app(scope, _replay(body, receive), send)
            return
        status, out = await self._run(call)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    async def _run(self, call: Callable[[], dict[str, Any]]) -> tuple[int, bytes]:
        if self.always_thread or self.avg_s > INLINE_MAX_S:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self._answer, call)
        return self._answer(call)

    def _answer(self, call: Callable[[], dict[str, Any]]) -> tuple[int, bytes]:
        try:
            body = call()
        except InvalidInput as exc:
            return 422, orjson.dumps(error_body(str(exc), feature=exc.feature, row=exc.row))
        except (BackendError, EdgeRuntimeError) as exc:
            return 503, orjson.dumps(error_body(str(exc)))
        if "latency_ms" in body:  # a single prediction: keep the recent average for _run
            self.avg_s += (body["latency_ms"] / 1000.0 - self.avg_s) * 0.05
        return 200, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _predict_call(rt: Runtime, doc: Any) -> Callable[[], dict[str, Any]] | None:
    """The call for a body the ``PredictRequest`` model accepts, else None."""
    if type(doc) is not dict or "features" not in doc or not doc.keys() <= {"features", "request_id"}:
        return None
    features, rid = doc["features"], doc.get("request_id")
    if type(features) not in (dict, list) or not (rid is None or (type(rid) is str and len(rid) <= 200)):
        return None

    def call() -> dict[str, Any]:
        p = rt.predict(features, request_id=rid)
        return _dump(p.to_dict(str_keys=_bool_labels(p.classes)))

    return call


@functools.lru_cache(maxsize=64)
def _bool_labels(classes: tuple[Any, ...] | None) -> bool:
    """orjson writes int, float and str labels as keys the way ``str()`` does, not booleans."""
    return bool(classes) and any(type(c) is bool for c in classes)  # type: ignore[union-attr]


def _batch_call(rt: Runtime, doc: Any) -> Callable[[], dict[str, Any]] | None:
    """The call for a body the ``BatchRequest`` model accepts, else None."""
    if type(doc) is not dict or doc.keys() != {"instances"}:
        return None
    rows = doc["instances"]
    if type(rows) is not list or not 1 <= len(rows) <= MAX_BATCH or any(type(r) not in (dict, list) for r in rows):
        return None

    def call() -> dict[str, Any]:
        preds = rt.predict_batch(rows)
        return {"predictions": [_dump(p.to_dict(str_keys=_bool_labels(p.classes))) for p in preds],
                "model_version": rt.model_version}

    return call


def _dump(d: dict[str, Any]) -> dict[str, Any]:
    """As FastAPI's ``response_model_exclude_none`` writes it."""
    if d.get("model_version") is None:
        d.pop("model_version", None)
    return d


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    """An error body; whatever of the caller's input it quotes is valid UTF-8 and bounded."""
    return {"error": echo(message, 2000), **{k: v for k, v in extra.items() if v is not None}}


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":  # the client went away: FastAPI's app will see it too
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _json_body(scope: Scope, body: bytes) -> Any:
    """The parsed body when it is JSON that orjson reads (strict: no NaN, no integers beyond 64
    bits, valid UTF-8), else None (FastAPI, which accepts more, then decides)."""
    ctype = b""
    for k, v in scope.get("headers", ()):
        if k == b"content-type":
            ctype = v
            break
    if not ctype.startswith(b"application/json"):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then whatever comes next (a disconnect)

    return again

"""The thin predict handler in front of the FastAPI app: it answers valid predict requests itself
(the FastAPI app never sees them), and for any body (fuzzed) its status and JSON are exactly
what the FastAPI app alone answers, errors included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_runtime
from edge_runtime.http.app import create_app
from edge_runtime.http.fast import FastPredict
from tests.conftest import write_fake_artifact


class Counting:
    """An ASGI app that counts the requests it is handed."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = write_fake_artifact(tmp_path_factory.mktemp("m") / "m", features=("tenure", "charges"),
                            weights=[[1.0, -1.0], [0.5, 2.0]], task="classification", version="7")
    rt = edge_runtime.load(d, fallback_default=1)
    plain = create_app(rt)
    inner = Counting(create_app(rt))
    yield rt, plain, FastPredict(rt, inner), inner
    rt.close()


def post(app: Any, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, Any]:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post(path, content=body, headers={"content-type": ctype})

    r = asyncio.run(go())
    try:
        doc = r.json()
    except ValueError:
        doc = r.text
    return r.status_code, _without_latency(doc)


def _without_latency(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_latency(v) for k, v in doc.items() if k != "latency_ms"}
    if isinstance(doc, list):
        return [_without_latency(v) for v in doc]
    return doc


def test_valid_requests_never_reach_the_fastapi_app(apps: Any) -> None:
    _, plain, fast, inner = apps
    before = inner.calls
    for body in ({"features": {"tenure": 1, "charges": 2}, "request_id": "r1"}, {"features": [0.5, 3]}):
        assert post(fast, "/predict", json.dumps(body).encode()) == post(plain, "/predict", json.dumps(body).encode())
    batch = json.dumps({"instances": [{"tenure": 1, "charges": 2}, [3, 4]]}).encode()
    status, doc = post(fast, "/predict/batch", batch)
    assert status == 200 and doc == post(plain, "/predict/batch", batch)[1]
    assert doc["model_version"] == "7" and len(doc["predictions"]) == 2
    # a caller's mistake the Runtime names is answered here too, as FastAPI's handler would
    bad = json.dumps({"features": {"tenure": "x", "charges": 1}}).encode()
    assert post(fast, "/predict", bad) == post(plain, "/predict", bad)
    assert inner.calls == before
    assert post(fast, "/health", b"")[0] == 405 and inner.calls == before + 1  # the rest is FastAPI's


@pytest.mark.parametrize("body", [
    b'{"features": {"tenure": NaN, "charges": 1}}',  # not JSON to orjson; FastAPI decides
    b'{"features": {"tenure": 1' + b"0" * 400 + b', "charges": 1}}',
    b'{"features": {"tenure": 1, "charges": 1, "\\ud800": 2}}',
    b'{"features": {"tenure": 3,', b"[1, 2]", b'{"rows": []}', b'{"features": 3}',
    b'{"features": [1, 2], "request_id": 5}', b'{"features": [1, 2], "request_id": "' + b"r" * 201 + b'"}',
    b'{"features": [1, 2], "colour": "red"}', b"",
])
def test_every_unusual_body_gets_fastapis_answer(apps: Any, body: bytes) -> None:
    _, plain, fast, _ = apps
    assert post(fast, "/predict", body) == post(plain, "/predict", body)


def test_another_content_type_gets_fastapis_answer(apps: Any) -> None:
    _, plain, fast, _ = apps
    body = json.dumps({"features": [1, 2]}).encode()
    assert post(fast, "/predict", body, "text/plain") == post(plain, "/predict", body, "text/plain")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                     max_leaves=8)
_bodies = st.one_of(
    st.fixed_dictionaries({"features": st.dictionaries(st.sampled_from(["tenure", "charges", "x"]), _json,
                                                       max_size=3) | st.lists(_json, max_size=3) | _json},
                          optional={"request_id": st.none() | st.text(max_size=3) | st.integers()}),
    st.fixed_dictionaries({"instances": st.lists(st.dictionaries(st.sampled_from(["tenure", "charges"]), _json)
                                                 | st.lists(_json, max_size=3) | _json, max_size=3)}),
    _json)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, path=st.sampled_from(["/predict", "/predict/batch"]))
def test_any_body_gets_the_same_status_and_json_as_fastapi(apps: Any, body: Any, path: str) -> None:
    _, plain, fast, _ = apps
    raw = json.dumps(body).encode()
    assert post(fast, path, raw) == post(plain, path, raw)

"""The local HTTP API against a real uvicorn server on a free port, and a property-based run
of schemathesis over its OpenAPI document that must find no 500."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

import edge_runtime
from edge_runtime.http import BackgroundServer, start_background
from tests.conftest import run_cli, write_fake_artifact


class LiveServer:
    """The server the device agent starts (``edge_runtime.http.start_background``), on a free port."""

    def __init__(self, rt: edge_runtime.Runtime) -> None:
        self.rt = rt

    def __enter__(self) -> BackgroundServer:
        self.server = start_background(self.rt, port=0)
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        assert not self.server.alive


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, edge_runtime.Runtime]]:
    d = write_fake_artifact(tmp_path_factory.mktemp("http") / "m", features=("tenure", "charges"),
                            weights=[[2.0], [0.5]], version="7")
    rt = edge_runtime.load(d, fallback_default=0.0, breaker_failures=0)
    with LiveServer(rt) as srv:
        yield srv.url, rt
    rt.close()


def test_predict_and_batch(served: tuple[str, edge_runtime.Runtime]) -> None:
    url, _ = served
    r = httpx.post(f"{url}/predict", json={"features": {"tenure": 3, "charges": 70.5}, "request_id": "r1"})
    assert r.status_code == 200
    body = r.json()
    assert body["value"] == pytest.approx(41.25) and body["source"] == "model"
    assert body["model_version"] == "7" and body["request_id"] == "r1" and body["latency_ms"] >= 0
    r = httpx.post(f"{url}/predict", json={"features": [1, 2]})
    assert r.status_code == 200 and r.json()["value"] == pytest.approx(3.0)
    r = httpx.post(f"{url}/predict/batch", json={"instances": [{"tenure": 1, "charges": 2}, [2, 4]]})
    assert r.status_code == 200
    b = r.json()
    assert [p["value"] for p in b["predictions"]] == pytest.approx([3.0, 6.0]) and b["model_version"] == "7"


@pytest.mark.parametrize(("body", "status", "text"), [
    (b'{"features": {"tenure": 3,', 400, "not valid JSON"),
    (b"[1, 2]", 422, "body"),
    (b'{"rows": []}', 422, "features: missing"),
    (b'{"features": {"tenure": 3}}', 422, "feature 'charges': missing; expected a finite number"),
    (b'{"features": {"tenure": "x", "charges": 1}}', 422, "feature 'tenure': expected a finite number, got str"),
    (b'{"features": {"tenure": 1, "charges": 1, "extra": 2}}', 422, "feature 'extra': unknown feature"),
    (b'{"features": {"tenure": NaN, "charges": 1}}', 422, "feature 'tenure': expected a finite number"),
    (b'{"features": [1]}', 422, "expected 2 values"),
    # finite in JSON (float64), not in the model's float32; an int too large for any float
    (b'{"features": {"tenure": 1.7976931348623157e308, "charges": 1}}', 422, "out of range for float32"),
    (b'{"features": {"tenure": 1' + b"0" * 400 + b', "charges": 1}}', 422, "out of range for float32"),
    (b'{"features": [1' + b"0" * 400 + b', 1]}', 422, "out of range for float32"),
    # an unknown key that is not valid UTF-8 (a lone surrogate) is named, escaped
    (b'{"features": {"tenure": 1, "charges": 1, "\\ud800": 2}}', 422, "unknown feature"),
])
def test_callers_mistakes_are_4xx_with_the_python_message(served: tuple[str, edge_runtime.Runtime], body: bytes,
                                                          status: int, text: str) -> None:
    url, rt = served
    r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert text in r.json()["error"]
    if b"features" in body and status == 422 and b"NaN" not in body and b"[1]" not in body:
        with pytest.raises(edge_runtime.InvalidInput) as exc:
            rt.predict(json.loads(body)["features"])
        assert r.json()["error"] == str(exc.value)  # the same message as the Python API


def test_an_error_quotes_at_most_a_few_dozen_characters_of_a_key(served: tuple[str, edge_runtime.Runtime]) -> None:
    url, _ = served
    key = "k" * 100_000
    r = httpx.post(f"{url}/predict", json={"features": {"tenure": 1, "charges": 1, key: 2}})
    assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
    assert "(100000 characters)" in r.json()["feature"]


def test_a_callers_bad_input_never_opens_the_breaker(tmp_path: Path) -> None:
    """Without a fallback, five model failures in a row open the breaker for everyone; a caller's
    values out of the model's range must be refused before the model, so they never count."""
    d = write_fake_artifact(tmp_path / "m", features=("tenure", "charges"))
    with edge_runtime.load(d, breaker_failures=5) as rt:
        for bad in ({"tenure": 1.7976931348623157e308, "charges": 1.0}, [3.5e38, 1.0],
                    {"tenure": 10**400, "charges": 1}, np.array([1e300, 1.0]), [[1e39, 1.0]]):
            for _ in range(6):
                with pytest.raises(edge_runtime.InvalidInput, match="out of range"):
                    rt.predict_batch(bad) if isinstance(bad, list) and isinstance(bad[0], list) else rt.predict(bad)
        assert rt.health()["breaker"] == "closed" and rt.model.backend.calls == 0 + rt.metrics()["predictions"]["model"]
        assert rt.predict({"tenure": 1.0, "charges": 2.0}).source == "model"


def test_batch_names_the_row(served: tuple[str, edge_runtime.Runtime]) -> None:
    url, _ = served
    r = httpx.post(f"{url}/predict/batch", json={"instances": [{"tenure": 1, "charges": 2},
                                                               {"tenure": 1, "charges": "x"}]})
    assert r.status_code == 422
    assert r.json() == {"error": "row 1, feature 'charges': expected a finite number, got str 'x'",
                        "feature": "charges", "row": 1}
    assert httpx.post(f"{url}/predict/batch", json={"instances": []}).status_code == 422


def test_health_ready_metrics_and_fallback(served: tuple[str, edge_runtime.Runtime]) -> None:
    url, rt = served
    assert httpx.post(f"{url}/predict", json={"features": [1, 2]}).json()["source"] == "model"
    h = httpx.get(f"{url}/health")
    assert h.status_code == 200 and h.json()["live"] is True and h.json()["model_version"] == "7"
    assert httpx.get(f"{url}/ready").json() == {"ready": True, "reasons": [], "model_version": "7"}
    rt.model.backend.fail = RuntimeError("down")
    try:
        r = httpx.post(f"{url}/predict", json={"features": [1, 2]})
        assert r.status_code == 200 and r.json()["source"] == "fallback" and r.json()["reason"] == "backend_error"
    finally:
        rt.model.backend.fail = None
    m = httpx.get(f"{url}/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert 'model_prediction_requests_total{model="fake",outcome="ok",source="model",version="7"}' in m.text
    assert "model_prediction_latency_seconds_bucket" in m.text
    assert 'model_prediction_fallbacks_total{model="fake",reason="backend_error"}' in m.text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(m.text)}  # valid exposition
    assert families["model_prediction_latency_seconds"].type == "histogram"
    assert families["model_prediction_requests"].type == "counter"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/ready", "/metrics"} <= set(spec["paths"])


def test_not_ready_and_no_fallback_is_503(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "m")
    with edge_runtime.load(d, breaker_failures=1, breaker_cooldown_s=60) as rt, LiveServer(rt) as srv:
        rt.model.backend.fail = RuntimeError("down")
        r = httpx.post(f"{srv.url}/predict", json={"features": [1, 2]})
        assert r.status_code == 503 and "no fallback is configured" in r.json()["error"]
        ready = httpx.get(f"{srv.url}/ready")
        assert ready.status_code == 503 and ready.json()["reasons"][0].startswith("circuit breaker open")
        assert httpx.get(f"{srv.url}/health").status_code == 200  # live, just not ready


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_property_run_finds_no_server_error(served: tuple[str, edge_runtime.Runtime], mode: str) -> None:
    """schemathesis generates requests from /openapi.json (valid and invalid ones) against the live
    server: no 5xx, every status and body as documented, invalid requests rejected with 4xx."""
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    url, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if mode == "negative":
        checks.append(negative_data_rejection)
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if mode == "negative" and op.method.upper() == "GET":
            continue  # nothing to get wrong in a request without parameters or body

        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=url, checks=checks, timeout=10)

        run()
    assert calls >= 40  # the run really exercised the API


def start_serve(target: Path, *args: str) -> tuple[subprocess.Popen[str], str, str]:
    """``edge-runtime serve TARGET --port 0 ...`` in a process; returns it, its URL and the line it printed."""
    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", str(target), "--port", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # log lines may come first; the address line says where it listens
        if line.startswith("edge-runtime serve: http://"):
            return proc, line.split()[2], line
    proc.wait(10)
    raise AssertionError(f"serve exited with {proc.returncode} before listening")


def stop_serve(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_serve_command_starts_the_server(tmp_path: Path) -> None:
    d = write_fake_artifact(tmp_path / "m")
    proc, url, line = start_serve(d)
    try:
        assert "model version 1 (ready)" in line and not url.endswith(":0")
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
        assert httpx.post(f"{url}/predict", json={"features": {"a": 1, "b": 2}}, timeout=10).json()["value"] == 3
    finally:
        stop_serve(proc)


def test_serve_command_bad_target_is_one_line() -> None:
    r = run_cli("serve", "/nonexistent/artifact", "--port", "0")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith("edge-runtime serve: error: cannot load model")

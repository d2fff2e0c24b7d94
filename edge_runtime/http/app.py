"""FastAPI app over one Runtime: POST /predict, POST /predict/batch, GET /health, /ready, /metrics.

Status codes: a caller's mistake is a 4xx whose ``error`` is the same message the Python API
raises (400 for a body that is not JSON, 422 for a body or row that cannot be valid, naming
the field or feature). 503 means the device itself cannot answer (the model failed and no
fallback is configured, or /ready while not ready). A 500 would be a bug.

    from edge_runtime.http.app import create_asgi
    app = create_asgi(edge_runtime.load("artifacts/iris"))    # FastAPI app + the fast predict routes
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from edge_runtime.errors import BackendError, EdgeRuntimeError, InvalidInput
from edge_runtime.http.fast import FastPredict, error_body
from edge_runtime.runtime import Runtime

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: dict[str, Any] | list[Any] = Field(
        description="One row: an object of named features, or a list of values in feature order",
        examples=[{"tenure": 3, "charges": 70.5}])
    request_id: str | None = Field(default=None, max_length=200, description="Echoed in the answer")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any] | list[Any]] = Field(
        min_length=1, max_length=10000, description="Rows: objects of named features or lists in feature order")


class PredictionOut(BaseModel):
    value: Any
    probabilities: dict[str, float] | None = None
    source: str = Field(description="model, cache or fallback")
    model_version: str | None
    latency_ms: float
    reason: str | None = Field(default=None, description="why a fallback answered")
    request_id: str | None = None
    variant: str | None = Field(default=None, description="primary or candidate, while an experiment runs")


class BatchOut(BaseModel):
    predictions: list[PredictionOut]
    model_version: str | None


class ErrorOut(BaseModel):
    error: str
    feature: str | None = None
    row: int | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body is not JSON"},
    422: {"model": ErrorOut, "description": "the body or a row cannot be valid (names the feature)"},
    503: {"model": ErrorOut, "description": "the model failed and no fallback is configured"},
}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(message, **extra), status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            return 400, f"request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = str(first.get("msg", "invalid request"))
    if first.get("type") == "missing":
        return 422, f"{loc or 'body'}: missing (expected {_EXPECTED.get(loc, 'a value')})"
    return 422, f"{loc or 'body'}: {msg}"


_EXPECTED = {"features": "an object of named features or a list of values",
             "instances": "a list of rows"}


def create_asgi(rt: Runtime) -> FastPredict:
    """What the servers run: the FastAPI app with the two predict routes answered by a thin
    handler in front of it (``edge_runtime.http.fast``)."""
    return FastPredict(rt, create_app(rt))


def create_app(rt: Runtime) -> FastAPI:
    """The HTTP API for ``rt`` as a FastAPI app (every route; the OpenAPI document). The Runtime
    stays the caller's to close."""
    app = FastAPI(title="edge-runtime", version=_version(),
                  description="Predictions from a model on this device. A caller's mistake is a 4xx "
                  "naming the feature; `source` says whether the model, the cache or the fallback answered.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, message)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if detail == "There was an error parsing the body":
            detail = "request body is not valid JSON (or not UTF-8)"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(InvalidInput)
    async def _invalid(_request: Request, exc: InvalidInput) -> JSONResponse:
        return _error(422, str(exc), feature=exc.feature, row=exc.row)

    @app.exception_handler(BackendError)
    async def _backend(_request: Request, exc: BackendError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(EdgeRuntimeError)
    async def _other(_request: Request, exc: EdgeRuntimeError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return _error(503, str(exc))

    @app.post("/predict", response_model=PredictionOut, response_model_exclude_none=True, responses=_ERRORS,
              summary="Predict one row")
    def predict(body: PredictRequest) -> dict[str, Any]:
        return rt.predict(body.features, request_id=body.request_id).to_dict()

    @app.post("/predict/batch", response_model=BatchOut, response_model_exclude_none=True, responses=_ERRORS,
              summary="Predict many rows")
    def predict_batch(body: BatchRequest) -> dict[str, Any]:
        preds = rt.predict_batch(body.instances)
        return {"predictions": [p.to_dict() for p in preds], "model_version": rt.model_version}

    @app.get("/health", summary="Liveness and readiness with reasons",
             responses={503: {"description": "not live"}})
    def health() -> JSONResponse:
        h = rt.health()
        return JSONResponse(h, status_code=200 if h["live"] else 503)

    @app.get("/ready", summary="200 when the model is loaded, smoke-tested and the breaker is not open",
             responses={503: {"description": "not ready; `reasons` says why"}})
    def ready() -> JSONResponse:
        h = rt.health()
        return JSONResponse({"ready": h["ready"], "reasons": h["reasons"], "model_version": h["model_version"]},
                            status_code=200 if h["ready"] else 503)

    @app.get("/metrics", summary="Prometheus text exposition", response_class=Response)
    def metrics() -> Response:
        return Response(rt.prometheus_text(), media_type=PROMETHEUS_TEXT)

    return app


def _version() -> str:
    from edge_runtime.version import __version__

    return __version__

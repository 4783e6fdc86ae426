"""The HTTP edge of the error tree: the one place that maps an error class to a status and
renders the envelope ``{"error": message, "field": ..., "reason": ...}`` (docs/architecture.md,
Contracts; ``error`` alone is what the Open Inference Protocol requires; the rest is present
when known). Every route — the inference fast path, the BentoML APIs, the FastAPI apps at
``/`` and ``/admin`` — answers an error through ``error_response``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from models.errors import (
    ArtifactInvalid,
    Conflict,
    InvalidInput,
    InvalidItems,
    NotFound,
    StaleRevision,
    Unavailable,
    VigilError,
)
from monitoring.metrics import GatewayMetrics
from service.errors import (
    Forbidden,
    HeadersTooLarge,
    PayloadTooLarge,
    PreconditionRequired,
    Unauthorized,
)
from store import UNAVAILABLE

STATUS: dict[type[VigilError], int] = {
    VigilError: 500,
    InvalidInput: 422,
    ArtifactInvalid: 422,
    NotFound: 404,
    Conflict: 409,
    StaleRevision: 412,
    Unavailable: 503,
    Unauthorized: 401,
    Forbidden: 403,
    PayloadTooLarge: 413,
    HeadersTooLarge: 431,
    PreconditionRequired: 428,
}


def status_of(exc: VigilError) -> int:
    """The status of the nearest class in ``STATUS`` up the error's ancestry."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def body_of(exc: VigilError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    if exc.reason is not None:
        body["reason"] = exc.reason
    if isinstance(exc, InvalidItems):
        body["errors"] = [{"field": f, "reason": r} for f, r in exc.problems]
    return body


def headers_of(exc: VigilError) -> dict[str, str]:
    if isinstance(exc, Unauthorized):  # RFC 6750 §3
        return {"WWW-Authenticate": 'Bearer error="invalid_token"' if exc.present
                else "Bearer"}
    if isinstance(exc, Unavailable):
        return {"Retry-After": str(exc.retry_after)}
    return {}


class JSONBody(JSONResponse):
    """A JSON response encoded with orjson (a JSONResponse, so the OpenAPI document says
    ``application/json`` with any JSON body rather than a string)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                   "reason": {"type": "string"}},
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route really answers."""
    return {code: {"description": "error", "content": {"application/json": {
        "schema": ERROR_SCHEMA}}} for code in codes}


def error_response(exc: VigilError) -> JSONBody:
    """The one rendering of an error, whichever route answers it."""
    return JSONBody(body_of(exc), status_code=status_of(exc), headers=headers_of(exc))


log = logging.getLogger("vigil.http")


def install(app: FastAPI,
            metrics: Callable[[], GatewayMetrics | None] = lambda: None) -> None:
    """Answer every error ``app`` raises in the envelope. ``metrics``: this worker's, when it
    is built (the apps are built at import, the worker's context later)."""

    @app.exception_handler(VigilError)
    async def _vigil(_: Request, exc: VigilError) -> JSONBody:
        return error_response(exc)

    async def _store(request: Request, exc: Exception) -> JSONBody:
        """A store that is locked past ``store.busy_timeout_seconds`` or unreachable: the
        caller may retry; predictions never wait on the store, so they keep being answered."""
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        counters = metrics()
        if counters is not None:
            counters.store_errors.labels("api").inc()
        return error_response(Unavailable("the store is unavailable (locked or unreachable); "
                                          "retry shortly"))

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, _store)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONBody:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                                  "header")]
        field = ".".join(loc) or str(first.get("loc", ("body",))[0])
        return error_response(InvalidInput(field, str(first.get("msg", "invalid"))))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONBody:
        if exc.status_code == 400:  # FastAPI could not parse the body (JSON or form)
            return error_response(InvalidInput("body", "could not be parsed: malformed JSON or "
                                               "form data"))
        message = exc.detail if isinstance(exc.detail, str) else "error"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
            message = f"method {request.method} not allowed; allowed: {headers['Allow']}"
        return JSONBody({"error": message, "field": "method", "reason": "not allowed"}
                              if exc.status_code == 405 else {"error": message},
                              status_code=exc.status_code, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first
    route whose path matched, so a GET and a PATCH on one path would advertise just GET.
    Each method is tried against the routes as a request would be: FastAPI wraps included
    routers in objects that match a path without listing its routes' methods."""
    return [m for m in METHODS
            if any(route.matches({**request.scope, "method": m})[0] is Match.FULL
                   for route in app.router.routes)]

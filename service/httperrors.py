"""Render every error in the envelope of docs/architecture.md, Contracts, for the FastAPI apps
Vigil mounts."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from models.deployment import DeploymentInvalid
from models.errors import (
    ArtifactInvalid,
    CardInvalid,
    IncompatibleVersion,
    InputInvalid,
    ModelError,
    StateConflict,
    UnknownModel,
    VersionConflict,
)
from service import errors
from service.errors import Conflict, InvalidInput, NotFound, Unavailable, VigilError


class JSONBody(JSONResponse):
    """A JSON response encoded with orjson (a JSONResponse, so the OpenAPI document says
    ``application/json`` with any JSON body rather than a string)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


ORJSONResponse = JSONBody

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


def from_model_error(exc: ModelError) -> VigilError:
    if isinstance(exc, VersionConflict | StateConflict):
        return Conflict(str(exc), field=exc.field, reason=exc.reason)
    if isinstance(exc, IncompatibleVersion):
        return errors.IncompatibleVersion(exc.field, exc.reason)
    if isinstance(exc, UnknownModel):
        return NotFound(exc.reason, field=exc.field, reason="not found")
    if isinstance(exc, CardInvalid | ArtifactInvalid | InputInvalid):
        return InvalidInput(exc.field, exc.reason)
    return VigilError(str(exc))


def render(exc: VigilError) -> ORJSONResponse:
    return ORJSONResponse(exc.to_body(), status_code=exc.status, headers=exc.headers)


log = logging.getLogger("vigil.http")


def install(app: FastAPI) -> None:
    @app.exception_handler(VigilError)
    async def _vigil(_: Request, exc: VigilError) -> ORJSONResponse:
        return render(exc)

    @app.exception_handler(ModelError)
    async def _model(_: Request, exc: ModelError) -> ORJSONResponse:
        return render(from_model_error(exc))

    @app.exception_handler(DeploymentInvalid)
    async def _deployment(_: Request, exc: DeploymentInvalid) -> ORJSONResponse:
        return render(InvalidInput(exc.field, exc.reason))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _store(request: Request, exc: Exception) -> ORJSONResponse:
        """A store that is locked past ``store.busy_timeout_seconds`` or unreachable: the
        caller may retry; predictions never wait on the store, so they keep being answered."""
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        ctx = getattr(request.app.state, "ctx", None)
        if ctx is not None and ctx.metrics is not None:
            ctx.metrics.store_errors.labels("api").inc()
        return render(Unavailable("the store is unavailable (locked or unreachable); retry "
                                  "shortly"))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                                  "header")]
        field = ".".join(loc) or str(first.get("loc", ("body",))[0])
        return render(InvalidInput(field, str(first.get("msg", "invalid"))))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body (JSON or form)
            return render(InvalidInput("body", "could not be parsed: malformed JSON or "
                                               "form data"))
        message = exc.detail if isinstance(exc.detail, str) else "error"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
            message = f"method {request.method} not allowed; allowed: {headers['Allow']}"
        return ORJSONResponse({"error": message, "field": "method", "reason": "not allowed"}
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

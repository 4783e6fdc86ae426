"""Render every error in the DESIGN §5 envelope, for the FastAPI apps Vigil mounts."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from models.errors import (
    ArtifactInvalid,
    CardInvalid,
    InputInvalid,
    ModelError,
    UnknownModel,
    VersionConflict,
)
from service.errors import Conflict, InvalidInput, NotFound, VigilError
from store import DeploymentInvalid


class JSONBody(Response):
    """A JSON response encoded with orjson."""

    media_type = "application/json"

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
    if isinstance(exc, VersionConflict):
        return Conflict(str(exc), field=exc.field, reason=exc.reason)
    if isinstance(exc, UnknownModel):
        return NotFound(exc.reason, field=exc.field, reason="not found")
    if isinstance(exc, CardInvalid | ArtifactInvalid | InputInvalid):
        return InvalidInput(exc.field, exc.reason)
    return VigilError(str(exc))


def render(exc: VigilError) -> ORJSONResponse:
    return ORJSONResponse(exc.to_body(), status_code=exc.status, headers=exc.headers)


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

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                                  "header")]
        field = ".".join(loc) or str(first.get("loc", ("body",))[0])
        return render(InvalidInput(field, str(first.get("msg", "invalid"))))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return ORJSONResponse({"error": message}, status_code=exc.status_code,
                              headers=getattr(exc, "headers", None))

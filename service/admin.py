"""The operator API, mounted at ``/admin``: models, deployments, promote/rollback, audit.

Every route needs a bearer token of a sufficient role; every mutation and every denied
attempt is written to the audit log (actor = the token's name, never the token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.deployment import Deployment, apply_patch, promoted, rolled_back
from models.errors import (
    IncompatibleVersion,
    InvalidInput,
    NotFound,
    StaleRevision,
    VigilError,
)
from models.profile import summarize_profile
from models.registry import NAME_PATTERN
from monitoring.monitor import read_stats
from service.auth import Principal
from service.context import WorkerContext, current_context, current_metrics
from service.errors import PayloadTooLarge, PreconditionRequired
from service.front import request_id
from service.httperrors import JSONBody, error_responses, install
from store import AuditRecord

bearer = HTTPBearer(auto_error=False, description="A Vigil token; roles: client < feedback "
                    "< viewer < operator < admin.")
NAME = NAME_PATTERN
ModelName = Annotated[str, Path(pattern=NAME, description="model name")]
VersionName = Annotated[str, Path(pattern=NAME, description="version")]
AUTH_ERRORS = (401, 403)
IfMatch = Annotated[str | None, Header(pattern=r'^\s*(W/)?"?[0-9]{1,18}"?\s*$',
                                       description="the deployment's revision (its ETag)")]

app = FastAPI(title="Vigil admin API", version="0.1.0", docs_url=None, redoc_url=None,
              openapi_url=None, default_response_class=JSONBody)
install(app, current_metrics)


def ctx_of(request: Request) -> WorkerContext:
    return current_context()


def require(role: str, action: str) -> Callable[..., Any]:
    """A dependency: the caller's principal, or 401/403 after auditing the denial."""

    async def dependency(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        ctx = ctx_of(request)
        header = request.headers.get("authorization")
        try:
            return ctx.auth.require(header, role)
        except VigilError as exc:
            who = ctx.auth.identify(header)
            await asyncio.to_thread(ctx.audit.write, AuditRecord(
                actor=who.name if who else "anonymous", role=who.role if who else None,
                action=action, target=request.url.path, outcome="denied",
                request_id=request_id(request.headers), detail=exc.message))
            raise

    return dependency


def _audit(ctx: WorkerContext, principal: Principal, request: Request, action: str,
           target: str, outcome: str, before: Any = None, after: Any = None,
           detail: str | None = None) -> None:
    ctx.audit.write(AuditRecord(actor=principal.name, role=principal.role, action=action,
                                target=target, outcome=outcome, before=before, after=after,
                                request_id=request_id(request.headers), detail=detail))


def _deployment_response(d: Deployment, status: int = 200) -> JSONBody:
    return JSONBody(d.to_public(), status_code=status, headers={"ETag": f'"{d.revision}"'})


def _expected_revision(if_match: str | None, required: bool) -> int | None:
    if if_match is None:
        if required:
            raise PreconditionRequired("If-Match", "missing", message=(
                "If-Match with the deployment's revision is required"))
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise InvalidInput("If-Match", "must be the deployment's revision number")
    return int(value)


@app.get("/models", summary="List models and their versions",
         responses=error_responses(*AUTH_ERRORS))
async def list_models(request: Request,
                      _: Annotated[Principal, Depends(require("viewer", "models.list"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    versions = await asyncio.to_thread(ctx.registry.list)
    deployed = {d.model: d for d in await asyncio.to_thread(ctx.deployments.all)}
    return {"models": [{"name": name, "versions": vs,
                        "champion": deployed[name].champion if name in deployed else None}
                       for name, vs in versions.items()]}


@app.get("/models/{model}/stats", summary="Live statistics and quality per version and variant",
         description="Served from what the Monitor last committed to the store (the Gateway "
         "never waits on the Monitor): per version and variant the request, row and error "
         "counts, latency p50/p95/p99, the distribution of predictions, quality metrics from "
         "joined labels (cumulative and over the last N labels) with how many labels they rest "
         "on; the feedback join counters; and the Monitor's lag.",
         responses=error_responses(*AUTH_ERRORS, 404))
async def model_stats(request: Request, model: ModelName,
                      _: Annotated[Principal, Depends(require("viewer", "models.stats"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    stats = await asyncio.to_thread(read_stats, ctx.engine, model)
    if not stats["versions"] and model not in await asyncio.to_thread(ctx.registry.list):
        raise NotFound("model", "unknown model", message=f"model '{model}' not found")
    return stats


@app.get("/models/{model}/versions/{version}", summary="A version's card and profile summary",
         responses=error_responses(*AUTH_ERRORS, 404))
async def get_version(request: Request, model: ModelName, version: VersionName,
                      _: Annotated[Principal, Depends(require("viewer", "models.read"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    mv = await asyncio.to_thread(ctx.registry.get, model, version)
    return {"name": model, "version": version, "created_at": mv.created_at,
            "onnx_sha256": mv.onnx_sha256, "card": mv.card.raw,
            "profile": summarize_profile(mv.profile)}


@app.post("/models/{model}/versions", status_code=201,
          summary="Register a version (ONNX file, card JSON, reference rows as CSV or Parquet)",
          responses={200: {"description": "identical version already registered"},
                     **error_responses(*AUTH_ERRORS, 409, 413, 422)})
async def register_version(
        request: Request, model: ModelName,
        principal: Annotated[Principal, Depends(require("admin", "models.register"))],
        model_file: Annotated[UploadFile, File(alias="model", description="model.onnx")],
        card: Annotated[str, Form(min_length=1, description="the model card, JSON")],
        reference: Annotated[UploadFile, File(description="reference rows, CSV or Parquet")],
) -> JSONBody:
    ctx = ctx_of(request)
    limit = ctx.settings.limits.max_upload_bytes
    onnx_bytes = await model_file.read(limit + 1)
    ref_bytes = await reference.read(limit + 1)
    target = f"models/{model}"
    try:
        if len(onnx_bytes) > limit or len(ref_bytes) > limit:
            raise PayloadTooLarge("model" if len(onnx_bytes) > limit else "reference",
                                  f"the limit is {limit} bytes")
        try:
            card_data = orjson.loads(card)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("card", f"is not valid JSON ({exc})") from None
        if not isinstance(card_data, dict) or card_data.get("name") != model:
            raise InvalidInput("card.name", f"must equal the model in the path ({model!r})")
        mv, created = await asyncio.to_thread(
            ctx.registry.register, onnx_bytes, card_data, ref_bytes, reference.filename or "")
        deployment = None
        if created:
            deployment = await asyncio.to_thread(_first_deployment, ctx, model, mv.version)
    except VigilError as exc:
        await asyncio.to_thread(_audit, ctx, principal, request, "models.register", target,
                                "rejected", detail=exc.message)
        raise
    after = {"version": mv.version, "onnx_sha256": mv.onnx_sha256,
             "lineage": mv.card.lineage}
    if created:
        await asyncio.to_thread(_audit, ctx, principal, request, "models.register",
                                f"{target}/versions/{mv.version}", "ok", None, after)
    body = {"name": model, "version": mv.version, "created": created,
            "onnx_sha256": mv.onnx_sha256, "created_at": mv.created_at,
            "deployment": deployment.to_public() if deployment else None}
    return JSONBody(body, status_code=201 if created else 200)


def _first_deployment(ctx: WorkerContext, model: str, version: str) -> Deployment | None:
    """The first version of a new model becomes its champion."""
    if model in ctx.deployments.revisions():
        return None
    try:
        deployment = ctx.deployments.create(Deployment(model=model, champion=version))
    except Exception:  # a concurrent first registration created it
        return None
    ctx.live.refresh()
    return deployment


@app.get("/deployments", summary="Every deployment", responses=error_responses(*AUTH_ERRORS))
async def list_deployments(request: Request, _: Annotated[
        Principal, Depends(require("viewer", "deployments.list"))]) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {"deployments": [d.to_public() for d in
                            await asyncio.to_thread(ctx.deployments.all)]}


@app.get("/deployments/{model}", summary="A model's deployment, with its revision as ETag",
         responses=error_responses(*AUTH_ERRORS, 404))
async def get_deployment(request: Request, model: ModelName, _: Annotated[
        Principal, Depends(require("viewer", "deployments.read"))]) -> JSONBody:
    ctx = ctx_of(request)
    return _deployment_response(await asyncio.to_thread(ctx.deployments.get, model))


def _change(ctx: WorkerContext, model: str, change: Callable[[Deployment], Deployment],
            expected: int | None) -> tuple[Deployment, Deployment]:
    """Apply ``change`` under compare-and-set; load and check new versions before commit."""
    current = ctx.deployments.get(model)  # or DeploymentNotFound
    new = change(current)  # a body that is wrong for any revision is a 422, checked first
    if expected is not None and expected != current.revision:
        raise StaleRevision(expected, current.revision)
    champion_card = ctx.registry.get(model, new.champion).card
    for version in sorted(new.versions() - current.versions()):
        try:
            card = ctx.registry.get(model, version).card
        except VigilError as exc:
            raise InvalidInput(_field_of(new, version), exc.reason or exc.message) from None
        why = champion_card.incompatibility(card)
        if why:
            raise IncompatibleVersion(_field_of(new, version), why)
    ctx.live.prepare(new)  # load + smoke-test here first: a broken version never commits
    committed = ctx.deployments.replace(new, current.revision)  # or StaleRevision
    ctx.live.refresh()
    ctx.publish_gauges()
    return current, committed


def _field_of(d: Deployment, version: str) -> str:
    if d.canary is not None and d.canary.version == version:
        return "canary.version"
    for i, s in enumerate(d.shadows):
        if s.version == version:
            return f"shadows[{i}].version"
    return "champion.version"


async def _mutate(request: Request, principal: Principal, model: str, action: str,
                  change: Callable[[Deployment], Deployment], expected: int | None) -> JSONBody:
    ctx = ctx_of(request)
    target = f"deployments/{model}"
    try:
        before, after = await asyncio.to_thread(_change, ctx, model, change, expected)
    except VigilError as exc:
        await asyncio.to_thread(_audit, ctx, principal, request, action, target, "rejected",
                                detail=exc.message)
        raise
    await asyncio.to_thread(_audit, ctx, principal, request, action, target, "ok",
                            before.to_public(), after.to_public())
    return _deployment_response(after)


PATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/merge-patch+json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": {
            "canary": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
                "version": {"type": "string"},
                "weight": {"type": "number", "minimum": 0, "maximum": 1}}}]},
            "shadows": {"type": "array", "items": {"type": "object", "properties": {
                "version": {"type": "string"},
                "sample_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}},
            "routing_key_header": {"type": "string"}}}},
    "application/json": {"schema": {"type": "object"}}}}}


async def json_body(request: Request, what: str, limit: int = 64 * 1024) -> Any:
    """An admin body as JSON whatever its Content-Type (``curl -d`` labels JSON as a form):
    413 above ``limit`` bytes, 422 naming ``body`` when it does not parse."""
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge("body", f"{what} is at most {limit // 1024} KiB")
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})") from None


@app.patch("/deployments/{model}", summary="Change canary, shadows or routing key header "
           "(JSON Merge Patch; If-Match: <revision> required)", openapi_extra=PATCH_BODY,
           responses=error_responses(*AUTH_ERRORS, 404, 412, 422, 428))
async def patch_deployment(
        request: Request, model: ModelName,
        principal: Annotated[Principal, Depends(require("operator", "deployments.patch"))],
        if_match: IfMatch = None) -> JSONBody:
    patch = await json_body(request, "a deployment patch")
    expected = _expected_revision(if_match, required=True)
    return await _mutate(request, principal, model, "deployments.patch",
                         lambda current: apply_patch(current, patch), expected)


@app.post("/deployments/{model}/promote", summary="The canary becomes champion",
          responses=error_responses(*AUTH_ERRORS, 404, 412, 422))
async def promote(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.promote"))],
                  if_match: IfMatch = None) -> JSONBody:
    return await _mutate(request, principal, model, "deployments.promote", promoted,
                         _expected_revision(if_match, required=False))


@app.post("/deployments/{model}/rollback",
          summary="The previous champion comes back; the canary is cleared",
          responses=error_responses(*AUTH_ERRORS, 404, 412, 422))
async def rollback(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.rollback"))],
                   if_match: IfMatch = None) -> JSONBody:
    return await _mutate(request, principal, model, "deployments.rollback", rolled_back,
                         _expected_revision(if_match, required=False))


@app.get("/audit", summary="The newest audit rows, newest first",
         responses=error_responses(*AUTH_ERRORS, 422))
async def audit(request: Request,
                _: Annotated[Principal, Depends(require("viewer", "audit.read"))],
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                action: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    ctx = ctx_of(request)
    rows = await asyncio.to_thread(ctx.audit.recent, limit, action)
    return {"items": [r.to_public() for r in rows]}


# the monitoring routes live in their own module; imported last, as they use the helpers above
from service import admin_monitoring  # noqa: E402

app.include_router(admin_monitoring.router)

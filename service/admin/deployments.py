"""Admin routes for deployments: read them, change canary/shadows/routing key header (JSON
Merge Patch under If-Match), promote and roll back — each change through the one use case,
``control.deployments``, and audited whether it is made or refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from control.deployments import change_deployment
from models.deployment import HEADER_RE, Deployment, apply_patch, promoted, rolled_back
from models.errors import VigilError
from service.admin.deps import (
    AUTH_ERRORS,
    NAME,
    IfMatch,
    ModelName,
    actor_of,
    audit,
    ctx_of,
    expected_revision,
    json_body,
    require,
)
from service.auth import Principal
from service.context import WorkerContext
from service.httperrors import JSONBody, error_responses

router = APIRouter()


def deployment_response(d: Deployment, status: int = 200) -> JSONBody:
    return JSONBody(d.to_public(), status_code=status, headers={"ETag": f'"{d.revision}"'})


@router.get("/deployments", summary="Every deployment",
            responses=error_responses(*AUTH_ERRORS))
async def list_deployments(request: Request, _: Annotated[
        Principal, Depends(require("viewer", "deployments.list"))]) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {"deployments": [d.to_public() for d in
                            await asyncio.to_thread(ctx.deployments.all)]}


@router.get("/deployments/{model}", summary="A model's deployment, with its revision as ETag",
            responses=error_responses(*AUTH_ERRORS, 404))
async def get_deployment(request: Request, model: ModelName, _: Annotated[
        Principal, Depends(require("viewer", "deployments.read"))]) -> JSONBody:
    ctx = ctx_of(request)
    return deployment_response(await asyncio.to_thread(ctx.deployments.get, model))


def change(ctx: WorkerContext, principal: Principal, request: Request, model: str,
           action: str, edit: Callable[[Deployment], Deployment],
           expected: int | None) -> Deployment:
    """The deployment use case; this worker then serves the new revision at once (the others
    on their next poll). Its domain errors go out as they are (service.httperrors)."""
    done = change_deployment(
        ctx.deployments, ctx.audit, model, edit, actor_of(request, principal), action,
        expected=expected, cards=lambda m, v: ctx.registry.get(m, v).card, loader=ctx.live)
    ctx.live.refresh()
    ctx.publish_gauges()
    return done.after


async def mutate(request: Request, principal: Principal, model: str, action: str,
                 edit: Callable[[Deployment], Deployment], expected: int | None) -> JSONBody:
    ctx = ctx_of(request)
    try:
        after = await asyncio.to_thread(change, ctx, principal, request, model, action, edit,
                                        expected)
    except VigilError as exc:
        await asyncio.to_thread(audit, ctx, principal, request, action,
                                f"deployments/{model}", "rejected", detail=exc.message)
        raise
    return deployment_response(after)


VERSION = {"type": "string", "pattern": NAME}
CANARY = {"type": "object", "additionalProperties": False, "properties": {
    "version": VERSION, "weight": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}}
SHADOW = {"type": "object", "additionalProperties": False, "required": ["version"],
          "properties": {"version": VERSION,
                         "sample_rate": {"type": "number", "exclusiveMinimum": 0,
                                         "maximum": 1}}}
PATCH_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "A JSON Merge Patch (RFC 7386) of the deployment: null removes a member. "
    "The champion changes only through promote and rollback. A version named must be "
    "registered and serve beside the champion (same task, classes and inputs), and serve one "
    "role: the canary is not the champion, a shadow is neither and is listed once.",
    "properties": {
        "canary": {"oneOf": [{"type": "null"}, CANARY]},
        "shadows": {"oneOf": [{"type": "null"}, {"type": "array", "items": SHADOW}]},
        "routing_key_header": {"oneOf": [{"type": "null"}, {
            "type": "string", "pattern": HEADER_RE.pattern}]}}}
PATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/merge-patch+json": {"schema": PATCH_SCHEMA},
    "application/json": {"schema": PATCH_SCHEMA}}}}


@router.patch("/deployments/{model}", summary="Change canary, shadows or routing key header "
              "(JSON Merge Patch; If-Match: <revision> required)", openapi_extra=PATCH_BODY,
              responses=error_responses(*AUTH_ERRORS, 404, 412, 422, 428))
async def patch_deployment(
        request: Request, model: ModelName,
        principal: Annotated[Principal, Depends(require("operator", "deployments.patch"))],
        if_match: IfMatch = None) -> JSONBody:
    patch = await json_body(request, "a deployment patch")
    expected = expected_revision(if_match, required=True)
    return await mutate(request, principal, model, "deployments.patch",
                        lambda current: apply_patch(current, patch), expected)


@router.post("/deployments/{model}/promote", summary="The canary becomes champion",
             description="409 when there is no canary to promote.",
             responses=error_responses(*AUTH_ERRORS, 404, 409, 412, 422))
async def promote(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.promote"))],
                  if_match: IfMatch = None) -> JSONBody:
    return await mutate(request, principal, model, "deployments.promote", promoted,
                        expected_revision(if_match, required=False))


@router.post("/deployments/{model}/rollback",
             summary="The previous champion comes back; the canary is cleared",
             description="409 when there is no previous champion to roll back to.",
             responses=error_responses(*AUTH_ERRORS, 404, 409, 412, 422))
async def rollback(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.rollback"))],
                   if_match: IfMatch = None) -> JSONBody:
    return await mutate(request, principal, model, "deployments.rollback", rolled_back,
                        expected_revision(if_match, required=False))

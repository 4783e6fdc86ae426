"""Admin routes for drift: a version's drift state, acknowledge its alarms, rebaseline it on
live rows (carried out by the Monitor)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request

from models.errors import DeploymentNotFound, InvalidInput, NotFound
from monitoring.drift.tracker import read_drift
from service.admin.deps import AUTH_ERRORS, NAME, ModelName, audit, ctx_of, require
from service.auth import Principal
from service.context import WorkerContext
from service.httperrors import JSONBody, error_responses
from store import DriftStore

router = APIRouter()


SignalName = Literal["input_mean", "input_scale", "input_joint", "input_category",
                     "input_unseen", "prediction", "error"]
SIGNAL_NAMES: tuple[str, ...] = get_args(SignalName)


async def _drift_version(ctx: WorkerContext, model: str, version: str | None) -> str:
    """The version a drift call is about: the one given (it must be registered), else the
    deployment's champion."""
    if version is None:  # the store's champion, not this worker's cached view of it
        try:
            d = await asyncio.to_thread(ctx.deployments.get, model)
        except DeploymentNotFound:
            raise NotFound("model", "unknown model",
                           message=f"model '{model}' is not deployed") from None
        return d.champion
    versions = (await asyncio.to_thread(ctx.registry.list)).get(model)
    if versions is None:
        raise NotFound("model", "unknown model", message=f"model '{model}' not found")
    if version not in versions:
        raise NotFound("version", "unknown version",
                       message=f"version '{version}' of model '{model}' not found")
    return version


VersionQuery = Annotated[str | None, Query(pattern=NAME, description="default: the champion")]


@router.get("/drift/{model}", summary="Drift state of a model version",
            description="Every signal's detectors (how close each is to its threshold, features "
            "ranked), each feature's PSI over the live window, the alarms (active first "
            "acknowledged later), the reference in use and pending rebaselines.",
            responses=error_responses(*AUTH_ERRORS, 404, 422))
async def drift_state(request: Request, model: ModelName,
                      _: Annotated[Principal, Depends(require("viewer", "drift.read"))],
                      version: VersionQuery = None) -> dict[str, Any]:
    ctx = ctx_of(request)
    version = await _drift_version(ctx, model, version)
    return await asyncio.to_thread(read_drift, ctx.engine, model, version)


@router.post("/drift/{model}/ack", summary="Acknowledge a version's open drift alarms",
             responses=error_responses(*AUTH_ERRORS, 404, 422))
async def drift_ack(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "drift.ack"))], version: VersionQuery = None,
                    signal: Annotated[SignalName | None, Query(
                        description="only this signal's alarms")] = None
                    ) -> dict[str, Any]:
    ctx = ctx_of(request)
    version = await _drift_version(ctx, model, version)
    ids = await asyncio.to_thread(DriftStore(ctx.engine).acknowledge, model, version,
                                  principal.name, signal)
    await asyncio.to_thread(audit, ctx, principal, request, "drift.ack",
                            f"{model}:{version}", after={"alarms": ids})
    return {"model": model, "version": version, "acknowledged": ids}


@router.post("/drift/{model}/rebaseline", status_code=202,
             summary="Adopt the last N live rows as the version's drift reference",
             description="The Monitor carries it out on its next tick once it holds N live rows "
             "of the version: the detectors restart against the adopted rows and its open alarms "
             "close. The registered reference stays in the registry beside it.",
             responses=error_responses(*AUTH_ERRORS, 404, 422))
async def drift_rebaseline(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "drift.rebaseline"))],
                           version: VersionQuery = None,
                           rows: Annotated[int | None, Query(ge=100)] = None) -> JSONBody:
    ctx = ctx_of(request)
    limit = ctx.settings.drift.rebaseline_rows
    rows = rows or limit
    if rows > limit:
        raise InvalidInput("rows", f"at most drift.rebaseline_rows ({limit}) live rows are kept")
    version = await _drift_version(ctx, model, version)
    rid = await asyncio.to_thread(DriftStore(ctx.engine).request_rebaseline, model, version,
                                  rows, principal.name)
    await asyncio.to_thread(audit, ctx, principal, request, "drift.rebaseline",
                            f"{model}:{version}", after={"request": rid, "rows": rows})
    return JSONBody({"model": model, "version": version, "request": rid, "rows": rows,
                     "status": "queued"}, status_code=202)

"""The operator API's monitoring routes, included into ``service.admin.app``: drift
(state, acknowledge, rebaseline), retraining webhooks (retrain, deliveries, redeliver, test)
and rollouts (start, read, pause/resume/abort/advance)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic import Field as PydField

from models.deployment import apply_patch
from models.errors import ModelError
from monitoring.drift.tracker import read_drift
from monitoring.retrain.policy import Firing
from monitoring.retrain.policy import event as policy_event
from monitoring.retrain.triggers import iso
from monitoring.retrain.webhooks import Target, enqueue, targets_from_config
from monitoring.rollout.analysis import Spec
from monitoring.rollout.controller import Controller, StaleRollout
from monitoring.rollout.controller import operate as operate_rollout_in_store
from monitoring.rollout.controller import read as read_rollout
from monitoring.rollout.controller import start as start_rollout_in_store
from service.admin import AUTH_ERRORS, NAME, ModelName, _audit, ctx_of, json_body, require
from service.auth import Principal
from service.context import WorkerContext
from service.errors import (
    Conflict,
    IncompatibleVersion,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from service.httperrors import JSONBody, error_responses, from_model_error
from service.inference import request_id_from
from store import (
    AuditRecord,
    DeploymentNotFound,
    DriftStore,
    Outbox,
    StaleRevision,
    transaction,
)

router = APIRouter()


SignalName = Literal["input_mean", "input_scale", "input_category", "input_unseen",
                     "prediction", "error"]
SIGNAL_NAMES: tuple[str, ...] = get_args(SignalName)


async def _drift_version(ctx: WorkerContext, model: str, version: str | None) -> str:
    """The version a drift call is about: the one given (it must be registered), else the
    deployment's champion."""
    if version is None:  # the store's champion, not this worker's cached view of it
        try:
            d = await asyncio.to_thread(ctx.deployments.get, model)
        except DeploymentNotFound:
            raise NotFound(f"model '{model}' is not deployed", field="model",
                           reason="unknown model") from None
        return d.champion
    versions = (await asyncio.to_thread(ctx.registry.list)).get(model)
    if versions is None:
        raise NotFound(f"model '{model}' not found", field="model", reason="unknown model")
    if version not in versions:
        raise NotFound(f"version '{version}' of model '{model}' not found", field="version",
                       reason="unknown version")
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
    await asyncio.to_thread(_audit, ctx, principal, request, "drift.ack",
                            f"{model}:{version}", "ok", None, {"alarms": ids})
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
    await asyncio.to_thread(_audit, ctx, principal, request, "drift.rebaseline",
                            f"{model}:{version}", "ok", None, {"request": rid, "rows": rows})
    return JSONBody({"model": model, "version": version, "request": rid, "rows": rows,
                     "status": "queued"}, status_code=202)


def _targets(ctx: WorkerContext) -> list[Target]:
    w = ctx.settings.webhooks
    return targets_from_config(w.targets, w.allow_link_local)


@router.post("/models/{model}/retrain", status_code=202,
          summary="Fire the retraining webhook for a model by hand",
          description="Writes a `vigil.retrain.requested` event (reason `manual`) with the "
          "champion's lineage to the outbox; the Monitor delivers it to every matching target.",
          responses=error_responses(*AUTH_ERRORS, 404))
async def retrain(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "models.retrain"))]) -> JSONBody:
    ctx = ctx_of(request)
    try:
        d = await asyncio.to_thread(ctx.deployments.get, model)
    except DeploymentNotFound:
        raise NotFound(f"model '{model}' is not deployed", field="model",
                       reason="unknown model") from None
    mv = await asyncio.to_thread(ctx.registry.get, model, d.champion)
    now = time.time()
    event_id = f"retrain-{model}-manual-{uuid.uuid4().hex[:16]}"
    firing = Firing(event_id, "manual", {"requested_by": principal.name})
    ev = policy_event(firing, model, d.champion, mv.card.lineage,
                      ctx.settings.server.base_url, iso(now))
    targets = _targets(ctx)

    def write() -> None:
        with transaction(ctx.engine) as tx:
            enqueue(tx, ev, event_id, targets, now, model, "manual")
            _audit_in(tx.connection, ctx, principal, request, "models.retrain", f"models/{model}",
                      {"event_id": event_id})
    await asyncio.to_thread(write)
    return JSONBody({"event_id": event_id, "model": model, "champion_version": d.champion,
                     "targets": [t.name for t in targets if t.matches(ev["type"], model)]},
                    status_code=202)


@router.get("/webhooks/deliveries", summary="Webhook deliveries and their attempts",
         responses=error_responses(*AUTH_ERRORS, 422))
async def deliveries(request: Request,
                     _: Annotated[Principal, Depends(require("viewer", "webhooks.read"))],
                     status: Annotated[Literal["pending", "delivered", "failed", "dead"] | None,
                                       Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {"items": await asyncio.to_thread(Outbox(ctx.engine).deliveries, status, limit)}


@router.post("/webhooks/deliveries/{delivery_id}/redeliver",
          summary="Queue a delivery (a dead letter, say) for a new round of attempts",
          responses=error_responses(*AUTH_ERRORS, 404))
async def redeliver_one(request: Request, delivery_id: Annotated[
        int, Path(ge=1, le=2**63 - 1, description="the delivery's id")], principal: Annotated[
        Principal, Depends(require("operator", "webhooks.redeliver"))]) -> dict[str, Any]:
    ctx = ctx_of(request)
    if not await asyncio.to_thread(Outbox(ctx.engine).redeliver, delivery_id):
        raise NotFound(f"delivery {delivery_id} not found", field="delivery_id",
                       reason="unknown delivery")
    await asyncio.to_thread(_audit, ctx, principal, request, "webhooks.redeliver",
                            f"deliveries/{delivery_id}", "ok")
    return {"id": delivery_id, "status": "pending"}


@router.post("/webhooks/{target}/test", status_code=202,
          summary="Send a signed vigil.test event to one target",
          responses=error_responses(*AUTH_ERRORS, 404))
async def test_target(request: Request, target: str, principal: Annotated[
        Principal, Depends(require("operator", "webhooks.test"))]) -> JSONBody:
    ctx = ctx_of(request)
    targets = _targets(ctx)
    if target not in {t.name for t in targets}:
        raise NotFound(f"webhook target '{target}' is not configured", field="target",
                       reason="unknown target")
    now = time.time()
    event_id = f"test-{target}-{uuid.uuid4().hex[:16]}"
    ev = {"type": "vigil.test", "timestamp": iso(now),
          "data": {"event_id": event_id, "target": target,
                   "gateway": ctx.settings.server.base_url}}

    def write() -> None:
        with transaction(ctx.engine) as tx:
            enqueue(tx, ev, event_id, targets, now, None, "test", only=target)
            _audit_in(tx.connection, ctx, principal, request, "webhooks.test", f"webhooks/{target}",
                      {"event_id": event_id})
    await asyncio.to_thread(write)
    return JSONBody({"event_id": event_id, "target": target}, status_code=202)


class RolloutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: str = PydField(pattern=NAME, description="the version to roll out")
    steps: list[float] = PydField([0.05, 0.25, 0.5, 1.0], min_length=1, max_length=20)
    min_seconds: float = PydField(60.0, ge=0)
    min_requests: int = PydField(200, ge=1)
    min_labels: int = PydField(100, ge=1)
    require_labels: bool = False
    max_wait_seconds: float = PydField(600.0, ge=0)
    alpha: float = PydField(0.05, gt=0, lt=0.5)
    error_margin: float = PydField(0.01, ge=0, le=1)
    latency_ratio: float = PydField(1.5, gt=1)
    latency_slack_ms: float = PydField(
        5.0, ge=0, le=60_000, description="the latency gate fails only when the canary's p95 "
        "is also this many milliseconds above the champion's")
    js_max: float = PydField(0.05, gt=0, le=1)
    quality_margin: float = PydField(0.02, ge=0, le=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < w <= 1 for w in v) or v != sorted(v) or v[-1] != 1.0:
            raise ValueError("weights in (0, 1], increasing, ending at 1.0")
        return v


async def rollout_body(request: Request) -> RolloutBody:
    """The rollout spec, read as JSON whatever the Content-Type says, as every other body
    of this API is: ``curl -d`` sends ``application/x-www-form-urlencoded``, which FastAPI
    would not parse, and the README's own example was refused as "not a dictionary"."""
    doc = await json_body(request, "a rollout spec")
    try:
        return RolloutBody.model_validate(doc)
    except ValidationError as exc:  # the same 422 envelope as any other field error
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


ROLLOUT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RolloutBody.model_json_schema()}}}}


@contextmanager
def rollout_errors(model: str) -> Iterator[None]:
    """The controller's exceptions as HTTP errors: no rollout 404, a wrong state 409 naming
    the field, a deployment that moved meanwhile 412."""
    try:
        yield
    except LookupError:
        raise NotFound(f"no rollout for model '{model}'", field="model",
                       reason="no rollout") from None
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise Conflict(str(exc), field=field, reason=reason) from None
    except StaleRevision:
        raise PreconditionFailed("the deployment changed meanwhile; try again",
                                 field="If-Match", reason="stale") from None
    except StaleRollout:  # the controller kept writing it through every retry
        raise Conflict("the rollout changed meanwhile; try again", field="model",
                       reason="changed meanwhile") from None


def _controller(ctx: WorkerContext) -> Controller:
    return Controller(ctx.engine, _targets(ctx), ctx.settings.server.base_url)


@router.post("/rollouts/{model}", status_code=201,
          summary="Start a rollout: the candidate walks the steps on evidence",
          description="The candidate becomes the canary at the first step's weight; the "
          "Monitor analyses each step (error rate, latency p95, prediction divergence, drift, "
          "quality on labels) and advances, pauses or aborts on its own.",
          responses=error_responses(*AUTH_ERRORS, 404, 409, 413, 422),
          openapi_extra=ROLLOUT_BODY)
async def start_rollout(request: Request, model: ModelName,
                        principal: Annotated[Principal, Depends(
                            require("operator", "rollout.start"))],
                        body: Annotated[RolloutBody, Depends(rollout_body)]) -> JSONBody:
    ctx = ctx_of(request)
    spec = Spec.from_dict(body.model_dump())

    def begin() -> dict[str, Any]:
        try:
            current = ctx.deployments.get(model)
        except DeploymentNotFound:
            raise NotFound(f"no deployment for model '{model}'", field="model",
                           reason="not deployed") from None
        new = apply_patch(current, {"canary": {"version": spec.candidate,
                                               "weight": spec.steps[0]}})
        try:
            card = ctx.registry.get(model, spec.candidate).card
        except ModelError as exc:
            raise InvalidInput("candidate", exc.reason) from None
        why = ctx.registry.get(model, current.champion).card.incompatibility(card)
        if why:
            raise IncompatibleVersion("candidate", why)
        try:
            ctx.live.prepare(new)
        except ModelError as exc:
            raise from_model_error(exc) from None
        with rollout_errors(model):
            doc = start_rollout_in_store(ctx.engine, model, spec, principal.name,
                                         principal.role)
        ctx.live.refresh()
        return doc
    return JSONBody(await asyncio.to_thread(begin), status_code=201)


@router.get("/rollouts/{model}", summary="A rollout: step, state, each gate's value, threshold, "
         "sample size and verdict", responses=error_responses(*AUTH_ERRORS, 404))
async def get_rollout(request: Request, model: ModelName,
                      _: Annotated[Principal, Depends(require("viewer", "rollout.read"))]
                      ) -> dict[str, Any]:
    doc = await asyncio.to_thread(read_rollout, ctx_of(request).engine, model)
    if doc is None:
        raise NotFound(f"no rollout for model '{model}'", field="model", reason="no rollout")
    return doc


@router.post("/rollouts/{model}/{command}", summary="Pause, resume, abort or advance a rollout",
          responses=error_responses(*AUTH_ERRORS, 404, 409, 422))
async def operate_rollout(request: Request, model: ModelName,
                          command: Annotated[str, Path(pattern="^(pause|resume|abort|advance)$")],
                          principal: Annotated[Principal, Depends(
                              require("operator", "rollout.operate"))]) -> dict[str, Any]:
    ctx = ctx_of(request)

    def run() -> dict[str, Any]:
        with rollout_errors(model):
            doc = operate_rollout_in_store(_controller(ctx), model, command, principal.name,
                                           principal.role)
        ctx.live.refresh()
        return doc
    return await asyncio.to_thread(run)


def _audit_in(conn: Any, ctx: WorkerContext, principal: Principal, request: Request,
              action: str, target: str, after: Any) -> None:
    ctx.audit.write(AuditRecord(actor=principal.name, role=principal.role, action=action,
                                target=target, outcome="ok", after=after,
                                request_id=request_id_from(request.headers)), conn)

"""Admin routes for retraining webhooks: fire one by hand, list deliveries and their
attempts, queue a delivery again, send a signed test event to a target."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from models.errors import DeploymentNotFound, NotFound
from monitoring.retrain.policy import Firing
from monitoring.retrain.policy import event as policy_event
from monitoring.retrain.triggers import iso
from monitoring.retrain.webhooks import Target, enqueue, targets_from_config
from service.admin.deps import AUTH_ERRORS, ModelName, audit, ctx_of, require
from service.auth import Principal
from service.context import WorkerContext
from service.httperrors import JSONBody, error_responses
from store import Outbox, transaction

router = APIRouter()


def targets_of(ctx: WorkerContext) -> list[Target]:
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
        raise NotFound("model", "unknown model",
                       message=f"model '{model}' is not deployed") from None
    mv = await asyncio.to_thread(ctx.registry.get, model, d.champion)
    now = time.time()
    event_id = f"retrain-{model}-manual-{uuid.uuid4().hex[:16]}"
    firing = Firing(event_id, "manual", {"requested_by": principal.name})
    ev = policy_event(firing, model, d.champion, mv.card.lineage,
                      ctx.settings.server.base_url, iso(now))
    targets = targets_of(ctx)

    def write() -> None:
        with transaction(ctx.engine) as tx:
            enqueue(tx, ev, event_id, targets, now, model, "manual")
            audit(ctx, principal, request, "models.retrain", f"models/{model}",
                  after={"event_id": event_id}, tx=tx)
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
        raise NotFound("delivery_id", "unknown delivery",
                       message=f"delivery {delivery_id} not found")
    await asyncio.to_thread(audit, ctx, principal, request, "webhooks.redeliver",
                            f"deliveries/{delivery_id}", "ok")
    return {"id": delivery_id, "status": "pending"}


@router.post("/webhooks/{target}/test", status_code=202,
             summary="Send a signed vigil.test event to one target",
             responses=error_responses(*AUTH_ERRORS, 404))
async def test_target(request: Request, target: str, principal: Annotated[
        Principal, Depends(require("operator", "webhooks.test"))]) -> JSONBody:
    ctx = ctx_of(request)
    targets = targets_of(ctx)
    if target not in {t.name for t in targets}:
        raise NotFound("target", "unknown target",
                       message=f"webhook target '{target}' is not configured")
    now = time.time()
    event_id = f"test-{target}-{uuid.uuid4().hex[:16]}"
    ev = {"type": "vigil.test", "timestamp": iso(now),
          "data": {"event_id": event_id, "target": target,
                   "gateway": ctx.settings.server.base_url}}

    def write() -> None:
        with transaction(ctx.engine) as tx:
            enqueue(tx, ev, event_id, targets, now, None, "test", only=target)
            audit(ctx, principal, request, "webhooks.test", f"webhooks/{target}",
                  after={"event_id": event_id}, tx=tx)
    await asyncio.to_thread(write)
    return JSONBody({"event_id": event_id, "target": target}, status_code=202)

"""The console's read endpoints, included into the admin app (viewer role): every model's
state in one call (``GET /admin/overview``), so a page refresh is one request, and a model's
per-minute history from the store (``GET /admin/models/{model}/history``)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from models.errors import NotFound
from monitoring.drift.tracker import read_drift
from monitoring.monitor import read_stats
from monitoring.rollout.controller import read as read_rollout
from service.admin.deps import AUTH_ERRORS, ModelName, ctx_of, require
from service.auth import Principal
from service.context import WorkerContext
from service.httperrors import error_responses
from store import history

router = APIRouter()
RECENT_MINUTES = 5


@router.get("/overview", summary="Every model at a glance (the console's overview)",
            description="Who is asking (token name and role); per model: the deployment "
            "(with its revision), the registered versions, per version and variant the "
            f"cumulative counts and the last {RECENT_MINUTES} minutes' requests/s, error rate "
            "and p99, the open drift alarms of every deployed version, the rollout, and the "
            "Monitor's lag. Read from what the Monitor last committed.",
            responses=error_responses(*AUTH_ERRORS))
async def overview(request: Request, principal: Annotated[
        Principal, Depends(require("viewer", "console.overview"))]) -> dict[str, Any]:
    doc = await asyncio.to_thread(_overview, ctx_of(request), time.time())
    # which buttons to draw; the server still checks every action's role
    return {"you": {"name": principal.name, "role": principal.role}, **doc}


@router.get("/models/{model}/history", summary="A model's per-minute history by variant",
            description="Per version and variant, each minute's requests, errors, rows and "
            "latency p50/p99 (seconds) over the last `minutes`, as the Monitor committed "
            "them; `window` sums the whole span.",
            responses=error_responses(*AUTH_ERRORS, 404, 422))
async def model_history(request: Request, model: ModelName,
                        _: Annotated[Principal, Depends(require("viewer", "models.history"))],
                        minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> dict[str, Any]:
    ctx = ctx_of(request)
    if model not in await asyncio.to_thread(ctx.registry.list):
        raise NotFound("model", "unknown model", message=f"model '{model}' not found")
    return await asyncio.to_thread(history.read, ctx.engine, model, minutes, time.time())


def _overview(ctx: WorkerContext, now: float) -> dict[str, Any]:
    registered = ctx.registry.list()
    deployed = {d.model: d for d in ctx.deployments.all()}
    monitor: dict[str, Any] = {}
    models = []
    for name in sorted(set(registered) | set(deployed)):
        stats = read_stats(ctx.engine, name)
        monitor = stats["monitor"]
        d = deployed.get(name)
        models.append({
            "name": name, "versions": registered.get(name, []),
            "deployment": d.to_public() if d else None,
            "variants": _variants(stats, history.read(ctx.engine, name, RECENT_MINUTES, now),
                                  now),
            "drift": {v: _drift(read_drift(ctx.engine, name, v))
                      for v in sorted(d.versions())} if d else {},
            "rollout": read_rollout(ctx.engine, name)})
    return {"now": now, "monitor": monitor, "models": models,
            "latency_objective_seconds": ctx.settings.server.latency_objective_seconds}


def _variants(stats: dict[str, Any], recent: dict[str, Any], now: float) -> list[dict[str, Any]]:
    windows = {(s["version"], s["variant"]): s for s in recent["series"]}
    out = []
    for version, variants in stats["versions"].items():
        for variant, r in variants.items():
            s = windows.get((version, variant))
            w = s["window"] if s else None
            seconds = max(1.0, now - s["points"][0]["t"]) if s else None
            out.append({
                "version": version, "variant": variant, "requests": r["requests"],
                "error_rate": r["error_rate"], "p99": r["latency_seconds"]["p99"],
                "recent": {"requests": w["requests"], "errors": w["errors"],
                           "requests_per_second": w["requests"] / seconds if seconds else 0,
                           "error_rate": w["errors"] / w["requests"] if w["requests"] else None,
                           "p99": w["p99"]} if w else None,
                "quality": r["quality"]["window"],
                "agreement_with_primary": r.get("agreement_with_primary")})
    return out


def _drift(state: dict[str, Any]) -> dict[str, Any]:
    return {"rows_seen": state["rows_seen"],
            "max_ratio": max((s.get("max_ratio") or 0 for s in state["signals"].values()),
                             default=0),
            "active_alarms": [{"id": a["id"], "signal": a["signal"], "score": a.get("score"),
                               "features": [f["feature"] for f in a.get("features", [])[:3]]}
                              for a in state["active_alarms"]]}

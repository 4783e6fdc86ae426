"""Admin routes for rollouts: start one (the candidate walks the steps on evidence), read
it, pause, resume, abort or advance it. The Monitor's controller does the walking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic import Field as PydField

from models.errors import (
    Conflict,
    DeploymentNotFound,
    InvalidInput,
    NotFound,
    RolloutNotFound,
    StaleRevision,
)
from monitoring.rollout.analysis import Spec
from monitoring.rollout.controller import Controller
from monitoring.rollout.controller import operate as operate_rollout_in_store
from monitoring.rollout.controller import read as read_rollout
from monitoring.rollout.controller import start as start_rollout_in_store
from service.admin.deps import (
    AUTH_ERRORS,
    NAME,
    ModelName,
    actor_of,
    changed,
    changed_meanwhile,
    ctx_of,
    json_body,
    require,
)
from service.admin.webhooks import targets_of
from service.auth import Principal
from service.context import WorkerContext
from service.httperrors import JSONBody, error_responses
from store.rollouts import StaleRollout

router = APIRouter()


class KpiGateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kpi: str = PydField(description="a KPI declared for the model (`kpis` in the config)")
    margin: float = PydField(ge=0, description="how much worse than the champion's mean the "
                             "canary's may be, in the KPI's units, at a one-sided bound")


class RolloutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: str = PydField(pattern=NAME, description="the version to roll out")
    steps: list[float] = PydField(
        [0.05, 0.25, 0.5, 1.0], min_length=1, max_length=20,
        description="the canary's weight at each step: each in (0, 1], in increasing order, "
        "the last 1.0 (reaching it is the promotion)",
        json_schema_extra={"items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                           "contains": {"const": 1.0}})
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
    kpi_gate: KpiGateBody | None = PydField(
        None, description="a business KPI gate: `{\"kpi\": \"conversion\", \"margin\": 0.01}`")

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
    except (RolloutNotFound, DeploymentNotFound):
        raise NotFound("model", "no rollout", message=f"no rollout for model '{model}'") from None
    except StaleRevision as exc:
        raise changed(exc) from None
    except StaleRollout:  # the controller kept writing it through every retry
        raise Conflict("model", "changed meanwhile",
                       message="the rollout changed meanwhile; try again") from None


def controller(ctx: WorkerContext) -> Controller:
    return Controller(ctx.engine, targets_of(ctx), ctx.settings.server.base_url)


@router.post("/rollouts/{model}", status_code=201,
             summary="Start a rollout: the candidate walks the steps on evidence",
             description="The candidate becomes the canary at the first step's weight; the "
             "Monitor analyses each step (error rate, latency p95, prediction divergence, drift, "
             "quality on labels) and advances, pauses or aborts on its own.",
             responses=error_responses(*AUTH_ERRORS, 404, 409, 412, 413, 422),
             openapi_extra=ROLLOUT_BODY)
async def start_rollout(request: Request, model: ModelName,
                        principal: Annotated[Principal, Depends(
                            require("operator", "rollout.start"))],
                        body: Annotated[RolloutBody, Depends(rollout_body)]) -> JSONBody:
    ctx = ctx_of(request)
    doc = body.model_dump()
    if body.kpi_gate is not None:
        declared = {k.name: k for k in ctx.settings.kpis.get(model, ())}
        if body.kpi_gate.kpi not in declared:
            raise InvalidInput("kpi_gate.kpi", f"undeclared KPI '{body.kpi_gate.kpi}' "
                               f"(declared for this model: {sorted(declared)})")
        doc["kpi_gate"]["better"] = declared[body.kpi_gate.kpi].better
    spec = Spec.from_dict(doc)

    def begin() -> dict[str, Any]:
        with changed_meanwhile():
            doc = start_rollout_in_store(
                ctx.engine, model, spec, actor_of(request, principal),
                cards=lambda m, v: ctx.registry.get(m, v).card, loader=ctx.live)
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
        raise NotFound("model", "no rollout", message=f"no rollout for model '{model}'")
    return doc


@router.post("/rollouts/{model}/{command}", summary="Pause, resume, abort or advance a rollout",
             responses=error_responses(*AUTH_ERRORS, 404, 409, 412, 422))
async def operate_rollout(request: Request, model: ModelName,
                          command: Annotated[str, Path(pattern="^(pause|resume|abort|advance)$")],
                          principal: Annotated[Principal, Depends(
                              require("operator", "rollout.operate"))]) -> dict[str, Any]:
    ctx = ctx_of(request)

    def run() -> dict[str, Any]:
        with rollout_errors(model):
            doc = operate_rollout_in_store(controller(ctx), model, command,
                                           actor_of(request, principal))
        ctx.live.refresh()
        return doc
    return await asyncio.to_thread(run)

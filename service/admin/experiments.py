"""Admin routes for experiments on business KPIs: start one (its arms take over the split),
read it (arms, effects with always-valid p-values, the decision), stop it. The Monitor's
controller looks every tick and concludes (docs/experiments.md)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic import Field as PydField

from models.errors import InvalidInput, NotFound
from monitoring.experiments.controller import ExperimentController
from monitoring.experiments.controller import read as read_experiment
from monitoring.experiments.controller import start as start_experiment
from monitoring.experiments.controller import stop as stop_experiment
from service.admin.deps import (
    AUTH_ERRORS,
    NAME,
    ModelName,
    actor_of,
    changed_meanwhile,
    ctx_of,
    json_body,
    require,
)
from service.admin.webhooks import targets_of
from service.auth import Principal
from service.httperrors import JSONBody, error_responses

router = APIRouter()


class GuardrailBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["error_rate", "latency_p95_ms"] | None = None
    kpi: str | None = None
    max_increase: float | None = PydField(None, ge=0)
    max_ratio: float | None = PydField(None, gt=1)
    max_decrease: float | None = PydField(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> GuardrailBody:
        limit = {"error_rate": self.max_increase, "latency_p95_ms": self.max_ratio}
        if (self.metric is None) == (self.kpi is None):
            raise ValueError("name exactly one of metric or kpi")
        if self.metric is not None and limit[self.metric] is None:
            need = "max_increase" if self.metric == "error_rate" else "max_ratio"
            raise ValueError(f"metric {self.metric} needs {need}")
        if self.kpi is not None and self.max_decrease is None:
            raise ValueError("a kpi guardrail needs max_decrease")
        return self


class ExperimentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arms: dict[str, float] = PydField(description="version -> traffic share (sum 1), two or "
                                      "more registered, compatible versions")
    primary: str = PydField(description="the KPI tested (declared for the model)")
    min_effect: float = PydField(gt=0, description="an absolute difference in the KPI's mean "
                                 "(10% → 12% is 0.02)")
    alpha: float = PydField(0.05, gt=0, le=0.2)
    power: float = PydField(0.8, ge=0.5, le=0.95)
    guardrails: list[GuardrailBody] = PydField([], max_length=20)
    mode: Literal["fixed", "bandit"] = "fixed"
    auto_promote: bool = False

    @model_validator(mode="after")
    def _arms(self) -> ExperimentBody:
        if not 2 <= len(self.arms) <= 10:
            raise ValueError("arms: two to ten versions")
        if any(not re.match(NAME, v) for v in self.arms):
            raise ValueError("arms: version names are [a-z0-9._-]{1,63}")
        if any(not 0 < w <= 1 for w in self.arms.values()) or \
                abs(sum(self.arms.values()) - 1) > 1e-6:
            raise ValueError("arms: shares in (0, 1] summing to 1")
        return self


async def experiment_body(request: Request) -> ExperimentBody:
    doc = await json_body(request, "an experiment")
    try:
        return ExperimentBody.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ExperimentBody.model_json_schema()}}}}


def not_found(model: str) -> NotFound:
    return NotFound("model", "no experiment", message=f"no experiment for model '{model}'")


@router.post("/experiments/{model}", status_code=201,
             summary="Start an experiment: arms split the traffic, a KPI decides",
             description="The arms take over the model's split (sticky by routing key, "
             "variant `experiment`); the Monitor tests the primary KPI with an always-valid "
             "mSPRT every tick and concludes on significance, futility, a guardrail or a "
             "stop. 409 while a rollout or another experiment runs.",
             responses=error_responses(*AUTH_ERRORS, 404, 409, 412, 413, 422),
             openapi_extra=BODY)
async def start(request: Request, model: ModelName,
                principal: Annotated[Principal, Depends(require("operator", "experiment.start"))],
                body: Annotated[ExperimentBody, Depends(experiment_body)]) -> JSONBody:
    ctx = ctx_of(request)
    declared = {k.name: k for k in ctx.settings.kpis.get(model, ())}
    if body.primary not in declared:
        raise InvalidInput("primary", f"undeclared KPI '{body.primary}' (declared for this "
                           f"model: {sorted(declared)})")
    for i, g in enumerate(body.guardrails):
        if g.kpi is not None and g.kpi not in declared:
            raise InvalidInput(f"guardrails[{i}].kpi", f"undeclared KPI '{g.kpi}'")
    kpi = declared[body.primary]
    spec = body.model_dump()
    spec["guardrails"] = [g.model_dump(exclude_none=True) for g in body.guardrails]

    def begin() -> dict[str, Any]:
        with changed_meanwhile():
            doc = start_experiment(ctx.engine, model, spec, kpi.kind, kpi.better,
                                   actor_of(request, principal),
                                   cards=lambda m, v: ctx.registry.get(m, v).card,
                                   loader=ctx.live,
                                   kpi_better={k: d.better for k, d in declared.items()})
        ctx.live.refresh()
        return doc
    return JSONBody(await asyncio.to_thread(begin), status_code=201)


@router.get("/experiments/{model}", summary="An experiment: status, decision, each arm's mean "
            "and interval, effects against the control with always-valid p-values",
            responses=error_responses(*AUTH_ERRORS, 404))
async def get(request: Request, model: ModelName,
              _: Annotated[Principal, Depends(require("viewer", "experiment.read"))]
              ) -> dict[str, Any]:
    doc = await asyncio.to_thread(read_experiment, ctx_of(request).engine, model)
    if doc is None:
        raise not_found(model)
    return doc


@router.post("/experiments/{model}/stop", summary="Stop an experiment: no winner, the "
             "champion serves alone", responses=error_responses(*AUTH_ERRORS, 404, 409, 412))
async def stop(request: Request, model: ModelName,
               principal: Annotated[Principal, Depends(require("operator", "experiment.stop"))]
               ) -> dict[str, Any]:
    ctx = ctx_of(request)

    def run() -> dict[str, Any]:
        controller = ExperimentController(ctx.engine, targets_of(ctx),
                                          ctx.settings.server.base_url)
        doc = stop_experiment(controller, model, actor_of(request, principal))
        ctx.live.refresh()
        return doc
    return await asyncio.to_thread(run)

"""The operator API, mounted at ``/admin``: models, deployments, promote/rollback, audit.

Every route needs a bearer token of a sufficient role; every mutation and every denied
attempt is written to the audit log (actor = the token's name, never the token).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydField

from models.errors import ModelError
from models.profile import summarize_profile
from monitoring.drift_tracker import acknowledge, read_drift, request_rebaseline
from monitoring.monitor import read_stats
from monitoring.policy import Firing
from monitoring.policy import event as policy_event
from monitoring.rollout import Spec
from monitoring.rollouts import Controller
from monitoring.rollouts import operate as operate_rollout_in_store
from monitoring.rollouts import read as read_rollout
from monitoring.rollouts import start as start_rollout_in_store
from monitoring.triggers import iso
from monitoring.webhooks import Target, enqueue, list_deliveries, redeliver, targets_from_config
from service.auth import Principal
from service.context import WorkerContext
from service.errors import (
    Conflict,
    IncompatibleVersion,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    VigilError,
)
from service.httperrors import JSONBody, error_responses, from_model_error, install
from service.inference import request_id_from
from store import AuditRecord, Deployment, DeploymentNotFound, StaleRevision
from store.deployments import apply_patch, promoted, rolled_back

bearer = HTTPBearer(auto_error=False, description="A Vigil token; roles: client < feedback "
                    "< viewer < operator < admin.")
NAME = r"^[a-z0-9._-]{1,63}$"
ModelName = Annotated[str, Path(pattern=NAME, description="model name")]
VersionName = Annotated[str, Path(pattern=NAME, description="version")]
AUTH_ERRORS = (401, 403)

app = FastAPI(title="Vigil admin API", version="0.1.0", docs_url=None, redoc_url=None,
              openapi_url=None, default_response_class=JSONBody)
install(app)


def ctx_of(request: Request) -> WorkerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


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
                request_id=request_id_from(request.headers), detail=exc.message))
            raise

    return dependency


def _audit(ctx: WorkerContext, principal: Principal, request: Request, action: str,
           target: str, outcome: str, before: Any = None, after: Any = None,
           detail: str | None = None) -> None:
    ctx.audit.write(AuditRecord(actor=principal.name, role=principal.role, action=action,
                                target=target, outcome=outcome, before=before, after=after,
                                request_id=request_id_from(request.headers), detail=detail))


def _deployment_response(d: Deployment, status: int = 200) -> JSONBody:
    return JSONBody(d.to_public(), status_code=status, headers={"ETag": f'"{d.revision}"'})


def _expected_revision(if_match: str | None, required: bool) -> int | None:
    if if_match is None:
        if required:
            raise PreconditionRequired("If-Match with the deployment's revision is required",
                                       field="If-Match", reason="missing")
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
        raise NotFound(f"model '{model}' not found", field="model", reason="unknown model")
    return stats


@app.get("/models/{model}/versions/{version}", summary="A version's card and profile summary",
         responses=error_responses(*AUTH_ERRORS, 404))
async def get_version(request: Request, model: ModelName, version: VersionName,
                      _: Annotated[Principal, Depends(require("viewer", "models.read"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    try:
        mv = await asyncio.to_thread(ctx.registry.get, model, version)
    except ModelError as exc:
        raise from_model_error(exc) from None
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
        card: Annotated[str, Form(description="the model card, JSON")],
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
        try:
            mv, created = await asyncio.to_thread(
                ctx.registry.register, onnx_bytes, card_data, ref_bytes,
                reference.filename or "")
        except ModelError as exc:
            raise from_model_error(exc) from None
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
    try:
        return _deployment_response(await asyncio.to_thread(ctx.deployments.get, model))
    except DeploymentNotFound:
        raise NotFound(f"no deployment for model '{model}'", field="model",
                       reason="not deployed") from None


def _change(ctx: WorkerContext, model: str, change: Callable[[Deployment], Deployment],
            expected: int | None) -> tuple[Deployment, Deployment]:
    """Apply ``change`` under compare-and-set; load and check new versions before commit."""
    try:
        current = ctx.deployments.get(model)
    except DeploymentNotFound:
        raise NotFound(f"no deployment for model '{model}'", field="model",
                       reason="not deployed") from None
    if expected is not None and expected != current.revision:
        raise PreconditionFailed(f"revision {expected} is stale; the deployment is at "
                                 f"{current.revision}", field="If-Match", reason="stale")
    new = change(current)
    champion_card = ctx.registry.get(model, new.champion).card
    for version in sorted(new.versions() - current.versions()):
        try:
            card = ctx.registry.get(model, version).card
        except ModelError as exc:
            raise InvalidInput(_field_of(new, version), exc.reason) from None
        why = champion_card.incompatibility(card)
        if why:
            raise IncompatibleVersion(_field_of(new, version), why)
    try:
        ctx.live.prepare(new)  # load + smoke-test here first: a broken version never commits
    except ModelError as exc:
        raise from_model_error(exc) from None
    try:
        committed = ctx.deployments.replace(new, current.revision)
    except StaleRevision as exc:
        raise PreconditionFailed(str(exc), field="If-Match", reason="stale") from None
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


@app.patch("/deployments/{model}", summary="Change canary, shadows or routing key header "
           "(JSON Merge Patch; If-Match: <revision> required)", openapi_extra=PATCH_BODY,
           responses=error_responses(*AUTH_ERRORS, 404, 412, 422, 428))
async def patch_deployment(
        request: Request, model: ModelName,
        principal: Annotated[Principal, Depends(require("operator", "deployments.patch"))],
        if_match: Annotated[str | None, Header()] = None) -> JSONBody:
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise PayloadTooLarge("body", "a deployment patch is at most 64 KiB")
    try:
        patch = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})") from None
    expected = _expected_revision(if_match, required=True)
    return await _mutate(request, principal, model, "deployments.patch",
                         lambda current: apply_patch(current, patch), expected)


@app.post("/deployments/{model}/promote", summary="The canary becomes champion",
          responses=error_responses(*AUTH_ERRORS, 404, 412, 422))
async def promote(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.promote"))],
                  if_match: Annotated[str | None, Header()] = None) -> JSONBody:
    return await _mutate(request, principal, model, "deployments.promote", promoted,
                         _expected_revision(if_match, required=False))


@app.post("/deployments/{model}/rollback",
          summary="The previous champion comes back; the canary is cleared",
          responses=error_responses(*AUTH_ERRORS, 404, 412, 422))
async def rollback(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "deployments.rollback"))],
                   if_match: Annotated[str | None, Header()] = None) -> JSONBody:
    return await _mutate(request, principal, model, "deployments.rollback", rolled_back,
                         _expected_revision(if_match, required=False))


SIGNAL_NAMES = ("input_mean", "input_scale", "input_category", "input_unseen", "prediction",
                "error")


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


@app.get("/drift/{model}", summary="Drift state of a model version",
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


@app.post("/drift/{model}/ack", summary="Acknowledge a version's open drift alarms",
          responses=error_responses(*AUTH_ERRORS, 404, 422))
async def drift_ack(request: Request, model: ModelName, principal: Annotated[
        Principal, Depends(require("operator", "drift.ack"))], version: VersionQuery = None,
                    signal: Annotated[str | None, Query(
                        description=f"one of {', '.join(SIGNAL_NAMES)}")] = None
                    ) -> dict[str, Any]:
    ctx = ctx_of(request)
    if signal is not None and signal not in SIGNAL_NAMES:
        raise InvalidInput("signal", f"unknown signal (one of {list(SIGNAL_NAMES)})")
    version = await _drift_version(ctx, model, version)
    ids = await asyncio.to_thread(acknowledge, ctx.engine, model, version, principal.name,
                                  signal)
    await asyncio.to_thread(_audit, ctx, principal, request, "drift.ack",
                            f"{model}:{version}", "ok", None, {"alarms": ids})
    return {"model": model, "version": version, "acknowledged": ids}


@app.post("/drift/{model}/rebaseline", status_code=202,
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
    rid = await asyncio.to_thread(request_rebaseline, ctx.engine, model, version, rows,
                                  principal.name)
    await asyncio.to_thread(_audit, ctx, principal, request, "drift.rebaseline",
                            f"{model}:{version}", "ok", None, {"request": rid, "rows": rows})
    return JSONBody({"model": model, "version": version, "request": rid, "rows": rows,
                     "status": "queued"}, status_code=202)


def _targets(ctx: WorkerContext) -> list[Target]:
    w = ctx.settings.webhooks
    return targets_from_config(w.targets, w.allow_link_local)


@app.post("/models/{model}/retrain", status_code=202,
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
        with ctx.engine.begin() as conn:
            enqueue(conn, ev, event_id, targets, now, model, "manual")
            _audit_in(conn, ctx, principal, request, "models.retrain", f"models/{model}",
                      {"event_id": event_id})
    await asyncio.to_thread(write)
    return JSONBody({"event_id": event_id, "model": model, "champion_version": d.champion,
                     "targets": [t.name for t in targets if t.matches(ev["type"], model)]},
                    status_code=202)


@app.get("/webhooks/deliveries", summary="Webhook deliveries and their attempts",
         responses=error_responses(*AUTH_ERRORS, 422))
async def deliveries(request: Request,
                     _: Annotated[Principal, Depends(require("viewer", "webhooks.read"))],
                     status: Annotated[Literal["pending", "delivered", "failed", "dead"] | None,
                                       Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    ctx = ctx_of(request)
    return {"items": await asyncio.to_thread(list_deliveries, ctx.engine, status, limit)}


@app.post("/webhooks/deliveries/{delivery_id}/redeliver",
          summary="Queue a delivery (a dead letter, say) for a new round of attempts",
          responses=error_responses(*AUTH_ERRORS, 404))
async def redeliver_one(request: Request, delivery_id: int, principal: Annotated[
        Principal, Depends(require("operator", "webhooks.redeliver"))]) -> dict[str, Any]:
    ctx = ctx_of(request)
    if not await asyncio.to_thread(redeliver, ctx.engine, delivery_id):
        raise NotFound(f"delivery {delivery_id} not found", field="delivery_id",
                       reason="unknown delivery")
    await asyncio.to_thread(_audit, ctx, principal, request, "webhooks.redeliver",
                            f"deliveries/{delivery_id}", "ok")
    return {"id": delivery_id, "status": "pending"}


@app.post("/webhooks/{target}/test", status_code=202,
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
        with ctx.engine.begin() as conn:
            enqueue(conn, ev, event_id, targets, now, None, "test", only=target)
            _audit_in(conn, ctx, principal, request, "webhooks.test", f"webhooks/{target}",
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
    js_max: float = PydField(0.05, gt=0, le=1)
    quality_margin: float = PydField(0.02, ge=0, le=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < w <= 1 for w in v) or v != sorted(v) or v[-1] != 1.0:
            raise ValueError("weights in (0, 1], increasing, ending at 1.0")
        return v


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


def _controller(ctx: WorkerContext) -> Controller:
    return Controller(ctx.engine, _targets(ctx), ctx.settings.server.base_url)


@app.post("/rollouts/{model}", status_code=201,
          summary="Start a rollout: the candidate walks the steps on evidence",
          description="The candidate becomes the canary at the first step's weight; the "
          "Monitor analyses each step (error rate, latency p95, prediction divergence, drift, "
          "quality on labels) and advances, pauses or aborts on its own.",
          responses=error_responses(*AUTH_ERRORS, 404, 409, 422))
async def start_rollout(request: Request, model: ModelName, body: RolloutBody,
                        principal: Annotated[Principal, Depends(
                            require("operator", "rollout.start"))]) -> JSONBody:
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


@app.get("/rollouts/{model}", summary="A rollout: step, state, each gate's value, threshold, "
         "sample size and verdict", responses=error_responses(*AUTH_ERRORS, 404))
async def get_rollout(request: Request, model: ModelName,
                      _: Annotated[Principal, Depends(require("viewer", "rollout.read"))]
                      ) -> dict[str, Any]:
    doc = await asyncio.to_thread(read_rollout, ctx_of(request).engine, model)
    if doc is None:
        raise NotFound(f"no rollout for model '{model}'", field="model", reason="no rollout")
    return doc


@app.post("/rollouts/{model}/{command}", summary="Pause, resume, abort or advance a rollout",
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


@app.get("/audit", summary="The newest audit rows, newest first",
         responses=error_responses(*AUTH_ERRORS, 422))
async def audit(request: Request,
                _: Annotated[Principal, Depends(require("viewer", "audit.read"))],
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                action: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    ctx = ctx_of(request)
    rows = await asyncio.to_thread(ctx.audit.recent, limit, action)
    return {"items": [r.to_public() for r in rows]}

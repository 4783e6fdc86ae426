"""Admin routes for the registry: list models, a model's live statistics, a version's card,
register a version (its first version becomes the model's champion)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from models.card import SCHEMA_PATH
from models.deployment import Deployment
from models.errors import InvalidInput, NotFound, VigilError
from models.profile import summarize_profile
from models.registry import ModelVersion
from monitoring.monitor import read_stats
from monitoring.quality.outcomes import read_kpis
from service.admin.deps import AUTH_ERRORS, ModelName, VersionName, audit, ctx_of, require
from service.auth import Principal
from service.context import WorkerContext
from service.errors import PayloadTooLarge
from service.httperrors import JSONBody, error_responses
from store.kpis import KpiStore
from store.transaction import Transaction

router = APIRouter()


def card_schema() -> dict[str, Any]:
    """The card's JSON Schema, for the OpenAPI document: the form field is a string holding
    JSON (``contentMediaType``) that this schema describes (``contentSchema``)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


@router.get("/models", summary="List models and their versions",
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


@router.get("/models/{model}/stats",
            summary="Live statistics and quality per version and variant",
            description="Served from what the Monitor last committed to the store (the "
            "Gateway never waits on the Monitor): per version and variant the request, row and "
            "error counts, latency p50/p95/p99, the distribution of predictions, quality "
            "metrics from joined labels (cumulative and over the last N labels) with how many "
            "labels they rest on; the feedback join counters; and the Monitor's lag.",
            responses=error_responses(*AUTH_ERRORS, 404))
async def model_stats(request: Request, model: ModelName,
                      _: Annotated[Principal, Depends(require("viewer", "models.stats"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    stats = await asyncio.to_thread(read_stats, ctx.engine, model)
    stats["kpis"] = await asyncio.to_thread(read_kpis, KpiStore(ctx.engine), model)
    if not stats["versions"] and model not in await asyncio.to_thread(ctx.registry.list):
        raise NotFound("model", "unknown model", message=f"model '{model}' not found")
    return stats


@router.get("/models/{model}/versions/{version}",
            summary="A version's card and profile summary",
            responses=error_responses(*AUTH_ERRORS, 404))
async def get_version(request: Request, model: ModelName, version: VersionName,
                      _: Annotated[Principal, Depends(require("viewer", "models.read"))]
                      ) -> dict[str, Any]:
    ctx = ctx_of(request)
    mv = await asyncio.to_thread(ctx.registry.get, model, version)
    return {"name": model, "version": version, "created_at": mv.created_at,
            "onnx_sha256": mv.onnx_sha256, "card": mv.card.raw,
            "profile": summarize_profile(mv.profile)}


@router.post("/models/{model}/versions", status_code=201,
             summary="Register a version (ONNX file, card JSON, reference rows as CSV or "
             "Parquet)",
             responses={200: {"description": "identical version already registered"},
                        **error_responses(*AUTH_ERRORS, 409, 413, 422)})
async def register_version(
        request: Request, model: ModelName,
        principal: Annotated[Principal, Depends(require("admin", "models.register"))],
        model_file: Annotated[UploadFile, File(alias="model", description="model.onnx")],
        card: Annotated[str, Form(
            min_length=1, description="the model card, JSON; its name is the model's",
            json_schema_extra={"contentMediaType": "application/json",
                               "contentSchema": card_schema()})],
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

        def audit_shared(tx: Transaction, mv: ModelVersion) -> None:
            """The audit row, committed with the shared copy (``service.artifacts``)."""
            audit(ctx, principal, request, "models.register", f"{target}/versions/{mv.version}",
                  after=registered(mv), tx=tx)

        mv, created = await asyncio.to_thread(
            ctx.registry.register, onnx_bytes, card_data, ref_bytes, reference.filename or "",
            audit_shared)
        deployment = None
        if created:
            deployment = await asyncio.to_thread(first_deployment, ctx, model, mv.version)
    except VigilError as exc:
        await asyncio.to_thread(audit, ctx, principal, request, "models.register", target,
                                "rejected", detail=exc.message)
        raise
    body = {"name": model, "version": mv.version, "created": created,
            "onnx_sha256": mv.onnx_sha256, "created_at": mv.created_at,
            "deployment": deployment.to_public() if deployment else None}
    return JSONBody(body, status_code=201 if created else 200)


def registered(mv: ModelVersion) -> dict[str, Any]:
    return {"version": mv.version, "onnx_sha256": mv.onnx_sha256, "lineage": mv.card.lineage}


def first_deployment(ctx: WorkerContext, model: str, version: str) -> Deployment | None:
    """The first version of a new model becomes its champion."""
    if model in ctx.deployments.revisions():
        return None
    try:
        deployment = ctx.deployments.create(Deployment(model=model, champion=version))
    except Exception:  # a concurrent first registration created it
        return None
    ctx.live.refresh()
    return deployment

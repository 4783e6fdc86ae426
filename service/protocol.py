"""The Open Inference Protocol (KServe V2 / Triton / MLServer REST) and KServe V1, mounted at
``/`` and served through the same routing, shadows and logging as ``/predict``. The tensors
themselves are decoded and encoded in ``service.tensors``.

The infer routes are the fast path: they read the body themselves (orjson, numpy — no pydantic
model of the tensors) and return a pre-serialized ``Response``, yet stay declared in the
OpenAPI document. The binary tensor data extension (``Inference-Header-Content-Length``) is
supported both ways, since it is what ``tritonclient`` sends by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response

from models.errors import InvalidInput
from models.inputs import decode_records, decode_rows
from models.registry import NAME_PATTERN
from service.context import WorkerContext, current_context
from service.fastpath import RouteHandler
from service.front import Decoded, FrontDoor
from service.httperrors import ERROR_SCHEMA, error_response, error_responses
from service.inference import Prediction, parse_json
from service.live import Served
from service.openapi import package_version
from service.tensors import (
    DATATYPES,
    NUMPY,
    InferRequest,
    output_tensors,
    parse_infer,
    split_body,
    tensor_meta,
)

NAME = NAME_PATTERN
ModelName = Annotated[str, Path(pattern=NAME, description="model name")]
VersionName = Annotated[str, Path(pattern=NAME, description="version")]
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
router = APIRouter()


def ctx_of(request: Request) -> WorkerContext:
    """This worker's context (the routes are declared at import, before any worker)."""
    return current_context()


# ----------------------------------------------------------------------------- encoding


def infer_response(served: Served, result: Prediction, req: InferRequest) -> Response:
    body = result.body
    card = served.runtimes[body["version"]].card
    tensors = output_tensors(card, body["predictions"])
    wanted = req.outputs if req.outputs is not None else [
        (name, req.binary_output) for name in tensors]
    outputs, chunks = [], []
    for name, binary in wanted:
        datatype, shape, arr = tensors[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            data = arr.astype(np.dtype(NUMPY[datatype]).newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        outputs.append(tensor)
    doc = {"model_name": body["model"], "model_version": body["version"],
           "id": req.id if req.id is not None else result.request_id,
           "parameters": {"variant": body["variant"], "request_id": result.request_id},
           "outputs": outputs}
    headers = response_headers(result)
    head = orjson.dumps(doc)
    if not chunks:
        return Response(head, media_type="application/json", headers=headers)
    headers["Inference-Header-Content-Length"] = str(len(head))
    return Response(head + b"".join(chunks), media_type="application/octet-stream",
                    headers=headers)


def response_headers(result: Prediction) -> dict[str, str]:
    return {"X-Request-ID": result.request_id, "X-Vigil-Variant": result.route.variant,
            "X-Vigil-Version": result.route.version, "X-Vigil-Revision": str(result.revision)}


class InferAdapter:
    """``POST /v2/models/{model}[/versions/{version}]/infer``: tensors in, tensors out."""

    async def decode(self, door: FrontDoor, request: Request,
                     names: Mapping[str, str]) -> Decoded[InferRequest]:
        model, version = names["model"], names.get("version")
        served = door.served(model, version)
        head, binary = split_body(await door.read(request), request.headers.get(HEADER_LENGTH))
        body = parse_json(head, door.max_body_bytes)
        card = served.runtimes[version].card if version else served.card
        req = parse_infer(card, body, binary, door.max_rows)
        return Decoded(served, req.matrix, req, version=version, routing_key=req.routing_key,
                       given_id=req.id)

    def encode(self, result: Prediction, decoded: Decoded[InferRequest]) -> Response:
        return infer_response(decoded.served, result, decoded.detail)


class V1PredictAdapter:
    """``POST /v1/models/{model}:predict``: ``{"instances": rows or records}``."""

    async def decode(self, door: FrontDoor, request: Request,
                     names: Mapping[str, str]) -> Decoded[None]:
        served = door.served(names["model"])
        body = await door.read_json(request)
        if not isinstance(body, dict) or "instances" not in body:
            raise InvalidInput("instances", "is required: a list of rows or records")
        unknown = sorted(set(body) - {"instances"})
        if unknown:
            raise InvalidInput(unknown[0], "unknown field (allowed: instances)")
        rows = body["instances"]
        if isinstance(rows, list):
            door.check_rows(len(rows), "instances")
        named = isinstance(rows, list) and bool(rows) and isinstance(rows[0], dict)
        matrix = (decode_records if named else decode_rows)(served.card, rows, "instances")
        return Decoded(served, matrix, None)

    def encode(self, result: Prediction, decoded: Decoded[None]) -> Response:
        return Response(orjson.dumps({"predictions": result.body["predictions"]}),
                        media_type="application/json", headers=response_headers(result))


INFER, V1_PREDICT = InferAdapter(), V1PredictAdapter()


# ----------------------------------------------------------------------------- routes

INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "routing_key": {"type": "string", "description": "sticky canary split key"},
            "binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"},
                           "shape": {"type": "array", "minItems": 1,
                                     "items": {"type": "integer", "minimum": 0}},
                           "datatype": {"type": "string", "enum": DATATYPES},
                           "parameters": {"type": "object"},
                           "data": {"type": "array"}}}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
    }}
INFER_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["model_name", "outputs"],
    "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                   "id": {"type": "string"}, "parameters": {"type": "object"},
                   "outputs": {"type": "array", "items": {"type": "object"}}}}
INFER_DOC = {
    "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": INFER_REQUEST_SCHEMA}}}},
    "response_class": Response,
    "responses": {200: {"description": "outputs of the version that answered",
                        "content": {"application/json": {"schema": INFER_RESPONSE_SCHEMA}}},
                  **error_responses(401, 403, 404, 413, 422, 503)},
}


async def _infer(ctx: WorkerContext, request: Request, model: str,
                 version: str | None = None) -> Response:
    return await ctx.front.infer(request, INFER, {"model": model, "version": version}
                                 if version is not None else {"model": model})


@router.post("/v2/models/{model}/infer", summary="OIP infer through the champion/canary split",
             tags=["Open Inference Protocol"], **INFER_DOC)  # type: ignore[arg-type]
async def infer(request: Request, model: ModelName) -> Response:
    return await _infer(ctx_of(request), request, model)


@router.post("/v2/models/{model}/versions/{version}/infer",
             summary="OIP infer by one version the deployment holds (variant 'explicit')",
             tags=["Open Inference Protocol"], **INFER_DOC)  # type: ignore[arg-type]
async def infer_version(request: Request, model: ModelName, version: VersionName) -> Response:
    return await _infer(ctx_of(request), request, model, version)


@router.get("/v2/health/live", summary="Server liveness", tags=["Open Inference Protocol"],
            response_class=Response, responses={200: {"description": "live"}})
async def live() -> Response:
    return Response(status_code=200)


@router.get("/v2/health/ready",
            summary="Server readiness: serves everything its deployments name",
            description="200 when this worker serves the stored revision of every model's "
            "deployment, and when there is no deployment yet (so the first model can be "
            "registered through a load balancer that waits for readiness). 503 with "
            "Retry-After while draining, or naming each model and version it does not serve "
            "and why: still loading, its artifact could not be fetched from the shared store "
            "(it keeps serving the previous revision and tries again), or it failed to load. "
            "`/readyz` answers the same, as plain text.",
            tags=["Open Inference Protocol"], response_class=Response,
            responses={200: {"description": "ready"}, **error_responses(503)})
async def ready(request: Request) -> Response:
    problem = ctx_of(request).readiness()
    return Response(status_code=200) if problem is None else error_response(problem)


@router.get("/v2", summary="Server metadata", tags=["Open Inference Protocol"])
async def server_metadata() -> dict[str, Any]:
    return {"name": "vigil", "version": package_version(), "extensions": EXTENSIONS}


def _metadata(request: Request, model: str, version: str | None) -> dict[str, Any]:
    served = ctx_of(request).front.served(model, version)
    card = served.runtimes[version].card if version else served.card
    d = served.deployment
    return {"name": model, "versions": sorted(served.runtimes), "platform": "onnx_onnxv1",
            **tensor_meta(card),
            "parameters": {"champion": d.champion,
                           "canary": d.canary.version if d.canary else None,
                           "class_labels": list(card.class_labels),
                           "features": card.feature_names}}


@router.get("/v2/models/{model}", summary="Model metadata (the champion's card)",
            tags=["Open Inference Protocol"], responses=error_responses(404))
async def model_metadata(request: Request, model: ModelName) -> dict[str, Any]:
    return _metadata(request, model, None)


@router.get("/v2/models/{model}/versions/{version}", summary="Model version metadata",
            tags=["Open Inference Protocol"], responses=error_responses(404))
async def version_metadata(request: Request, model: ModelName,
                           version: VersionName) -> dict[str, Any]:
    return _metadata(request, model, version)


@router.get("/v2/models/{model}/ready", summary="Model readiness",
            tags=["Open Inference Protocol"], response_class=Response,
            responses={200: {"description": "ready"}, **error_responses(404)})
async def model_ready(request: Request, model: ModelName) -> Response:
    ctx_of(request).front.served(model)
    return Response(status_code=200)


@router.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness",
            tags=["Open Inference Protocol"], response_class=Response,
            responses={200: {"description": "ready"}, **error_responses(404)})
async def version_ready(request: Request, model: ModelName, version: VersionName) -> Response:
    ctx_of(request).front.served(model, version)
    return Response(status_code=200)


# ----------------------------------------------------------------------------- KServe V1

V1_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["instances"], "additionalProperties": False,
    "properties": {"instances": {"type": "array", "minItems": 1, "items": {
        "oneOf": [{"type": "array"}, {"type": "object"}]},
        "description": "rows in the card's feature order, or named records"}}}


class _V1Name(StringConvertor):
    """A V1 model segment stops at ':' so ``GET /v1/models/m:predict`` is not read as model
    ``m:predict`` (it answers 405, Allow: POST)."""

    regex = "[^/:]+"


register_url_convertor("v1name", _V1Name())


@router.get("/v1/models/{model:v1name}", summary="KServe V1 model status",
            tags=["KServe V1"], responses=error_responses(404))
async def v1_model(request: Request, model: ModelName) -> dict[str, Any]:
    ctx_of(request).front.served(model)
    return {"name": model, "ready": True}


@router.post("/v1/models/{model}:predict", summary="KServe V1 predict through the split",
             tags=["KServe V1"], response_class=Response,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": V1_REQUEST_SCHEMA}}}},
             responses={200: {"description": "one prediction per instance", "content": {
                 "application/json": {"schema": {"type": "object", "required": ["predictions"],
                                                 "properties": {"predictions": {
                                                     "type": "array"}}}}}},
                        **error_responses(401, 403, 404, 413, 422, 503)})
async def v1_predict(request: Request, model: ModelName) -> Response:
    return await _v1_predict(ctx_of(request), request, model)


async def _v1_predict(ctx: WorkerContext, request: Request, model: str) -> Response:
    return await ctx.front.infer(request, V1_PREDICT, {"model": model})


# ----------------------------------------------------------------------------- fast path

_SEGMENT = NAME.strip("^$")
FAST_ROUTES: list[tuple[re.Pattern[str], RouteHandler]] = [
    (re.compile(rf"/v2/models/(?P<model>{_SEGMENT})/infer"), _infer),
    (re.compile(rf"/v2/models/(?P<model>{_SEGMENT})/versions/(?P<version>{_SEGMENT})/infer"),
     _infer),
    (re.compile(rf"/v1/models/(?P<model>{_SEGMENT}):predict"), _v1_predict),
]
"""The POST routes ``service.fastpath`` dispatches ahead of the routers: the same handlers
as the routes above, for paths whose names already satisfy the routes' patterns (any other
path goes through the routers and gets their answer, a 422 or a 404)."""


__all__ = ["ERROR_SCHEMA", "FAST_ROUTES", "router"]

"""``POST /predict``, Vigil's own body — ``{model, inputs | instances, routing_key?}`` — as an
adapter of the front door (``service.front``): decode the body, encode the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from models.errors import InvalidInput
from models.inputs import decode_records, decode_rows
from service.front import Decoded, FrontDoor
from service.inference import Prediction
from service.live import Served

FIELDS = {"model", "inputs", "instances", "routing_key"}


class Checks(Protocol):
    def served(self, model: str, version: str | None = None) -> Served: ...

    def check_rows(self, n: int, field: str) -> None: ...


def decode_predict(checks: Checks, body: Any) -> Decoded[None]:
    """Validate a ``/predict`` body: what serves it, the matrix and the routing key."""
    if body is None:
        raise InvalidInput("body", "is required")
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput(unknown[0] or repr(unknown[0]),
                           f"unknown field (allowed: {sorted(FIELDS)})")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model", "is required and must be a model name")
    served = checks.served(model)
    key = body.get("routing_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise InvalidInput("routing_key", "must be a string of 1–256 characters")
    has_inputs, has_instances = "inputs" in body, "instances" in body
    if has_inputs == has_instances:
        raise InvalidInput("inputs", "give exactly one of 'inputs' (named records) or "
                           "'instances' (rows in the card's feature order)")
    field = "inputs" if has_inputs else "instances"
    rows = body[field]
    if isinstance(rows, list):
        checks.check_rows(len(rows), field)
    matrix = (decode_records if has_inputs else decode_rows)(served.card, rows, field)
    return Decoded(served, matrix, None, routing_key=key)


class PredictAdapter:
    async def decode(self, door: FrontDoor, request: Request,
                     names: Mapping[str, str]) -> Decoded[None]:
        return decode_predict(door, await door.read_json(request))

    def encode(self, result: Prediction, decoded: Decoded[None]) -> Response:
        return Response(orjson.dumps(result.body), media_type="application/json",
                        headers={"X-Request-ID": result.request_id,
                                 "X-Vigil-Revision": str(result.revision),
                                 "X-Vigil-Variant": result.route.variant})


PREDICT = PredictAdapter()

"""The OpenAPI document (``/docs.json``) that tells the truth about ``/predict``.

BentoML documents every ``@bentoml.api`` route with 200/400/404/500 and a 400 body that
breaks its own schema. Vigil validates its own input, so ``/predict`` answers 200, 401,
404, 413 or 422 (and 503 with Retry-After when overloaded) in Vigil's envelope.
"""

from __future__ import annotations

from typing import Any

import attrs
from _bentoml_sdk.service.factory import Service
from bentoml._internal.service.openapi.specification import OpenAPISpecification, PathItem

from service.httperrors import ERROR_SCHEMA

PREDICTION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "required": ["label", "label_index", "probabilities"],
         "properties": {"label": {"type": "string"}, "label_index": {"type": "integer"},
                        "probabilities": {"type": "object",
                                          "additionalProperties": {"type": "number"}}}},
        {"type": "object", "required": ["value"], "properties": {"value": {"type": "number"}}},
    ]
}

PREDICT_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["model", "version", "variant", "request_id", "predictions"],
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "variant": {"type": "string", "enum": ["champion", "canary", "explicit"]},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": PREDICTION_SCHEMA},
    },
}

PREDICT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "description": "the model to ask, e.g. breast_cancer"},
        "inputs": {"type": "array", "minItems": 1, "items": {"type": "object"},
                   "description": "named records, one per row (or give instances)"},
        "instances": {"type": "array", "minItems": 1, "items": {"type": "array"},
                      "description": "rows of values in the card's feature order"},
        "routing_key": {"type": "string", "minLength": 1, "maxLength": 256,
                        "description": "sticky canary split key"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def predict_operation() -> dict[str, Any]:
    return {
        "tags": ["Service APIs"],
        "operationId": "vigil__predict",
        "summary": "Predict with the model's champion, canary split and shadows",
        "description": "Routes by `routing_key` (or the deployment's routing-key header), "
                       "answers with the version and variant that served the request.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": PREDICT_REQUEST}}},
        "responses": {
            "200": {"description": "predictions, one per input row",
                    "content": {"application/json": {"schema": PREDICT_RESPONSE}}},
            "401": _error("a token is required (auth.inference: required)"),
            "403": _error("the token's role may not predict"),
            "404": _error("unknown model"),
            "413": _error("body or rows over the configured limit"),
            "415": _error("unsupported content type"),
            "422": _error("the body breaks the model's input schema; names the field"),
            "503": _error("overloaded or not ready; see Retry-After"),
        },
    }


class VigilService(Service):  # type: ignore[type-arg]
    @property
    def openapi_spec(self) -> OpenAPISpecification:
        spec = super().openapi_spec
        spec.paths["/predict"] = PathItem(post=predict_operation())
        info = attrs.evolve(spec.info, title="Vigil", description=(
            "Model-serving gateway with built-in monitoring: BentoML-native /predict and the "
            "operator API under /admin."))
        return attrs.evolve(spec, info=info)

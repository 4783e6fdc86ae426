"""The OpenAPI document (``/docs.json``) that tells the truth about ``/predict`` and
``/feedback``.

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


FEEDBACK_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["request_id"],
    "additionalProperties": False,
    "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 128,
                       "description": "the request_id of the prediction"},
        "label": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                  "description": "a classifier's true class (a class label or its index)"},
        "value": {"type": "number", "description": "a regressor's true value"},
        "row": {"type": "integer", "minimum": 0, "description": "row of a batch (default 0)"},
    },
}

FEEDBACK_REQUEST: dict[str, Any] = {
    "oneOf": [
        {"allOf": [FEEDBACK_ITEM, {"required": ["model"], "properties": {
            "model": {"type": "string"}}}]},
        {"type": "object", "required": ["model", "items"], "additionalProperties": False,
         "properties": {"model": {"type": "string"},
                        "items": {"type": "array", "minItems": 1, "items": FEEDBACK_ITEM}}},
    ]
}

INVALID_ITEMS_SCHEMA: dict[str, Any] = {
    "allOf": [ERROR_SCHEMA, {"type": "object", "properties": {"errors": {
        "type": "array", "items": {"type": "object", "required": ["field", "reason"],
                                   "properties": {"field": {"type": "string"},
                                                  "reason": {"type": "string"}}}}}}]}


def feedback_operation() -> dict[str, Any]:
    return {
        "tags": ["Service APIs"],
        "operationId": "vigil__feedback",
        "summary": "Ground-truth labels for earlier predictions",
        "description": "Joined to the prediction by request_id in the Monitor (labels may "
                       "arrive days later); a label scores every version that answered, "
                       "shadows included. The batch is taken whole or not at all.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": FEEDBACK_REQUEST}}},
        "responses": {
            "202": {"description": "queued for the Monitor", "content": {"application/json": {
                "schema": {"type": "object", "required": ["model", "accepted"],
                           "properties": {"model": {"type": "string"},
                                          "accepted": {"type": "integer"}}}}}},
            "401": _error("a token of role feedback or above is required"),
            "403": _error("the token's role may not send feedback"),
            "404": _error("unknown model"),
            "413": _error("body over the configured limit"),
            "422": {"description": "one or more items are invalid; `errors` lists every one "
                                   "and nothing was accepted",
                    "content": {"application/json": {"schema": INVALID_ITEMS_SCHEMA}}},
            "503": _error("the log cannot take labels now; retry the batch after Retry-After"),
        },
    }


class VigilService(Service):  # type: ignore[type-arg]
    @property
    def openapi_spec(self) -> OpenAPISpecification:
        spec = super().openapi_spec
        spec.paths["/predict"] = PathItem(post=predict_operation())
        spec.paths["/feedback"] = PathItem(post=feedback_operation())
        info = attrs.evolve(spec.info, title="Vigil", description=(
            "Model-serving gateway with built-in monitoring: BentoML-native /predict and "
            "/feedback, and the operator API under /admin."))
        return attrs.evolve(spec, info=info)

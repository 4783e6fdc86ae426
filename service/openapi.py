"""The OpenAPI document (``/docs.json``) that tells the truth about ``/predict`` and
``/feedback``.

BentoML documents every ``@bentoml.api`` route with 200/400/404/500 and a 400 body that
breaks its own schema. Vigil validates its own input, so ``/predict`` answers 200, 401,
404, 413 or 422 (and 503 with Retry-After when overloaded) in Vigil's envelope.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
from _bentoml_sdk.service.factory import Service
from bentoml._internal.service.openapi.specification import OpenAPISpecification, PathItem

from models.registry import NAME_PATTERN
from service.httperrors import ERROR_SCHEMA
from service.limits import ASGI, Receive, Scope, Send
from service.settings import settings

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
        "variant": {"type": "string",
                    "enum": ["champion", "canary", "explicit", "experiment"]},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": PREDICTION_SCHEMA},
    },
}

PREDICT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "pattern": NAME_PATTERN,
                  "description": "the model to ask, e.g. breast_cancer"},
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


# the admin app's scheme (``service.admin.deps.bearer``), which the document already declares
BEARER: list[dict[str, list[str]]] = [{"HTTPBearer": []}]


def _secured(operation: dict[str, Any], token_required: bool) -> dict[str, Any]:
    """The operation with the bearer scheme when the configuration asks for a token, so
    generated clients send one."""
    return {**operation, "security": BEARER} if token_required else operation


def predict_operation(token_required: bool = False) -> dict[str, Any]:
    return _secured({
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
    }, token_required)


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
        {**FEEDBACK_ITEM, "required": ["model", "request_id"], "properties": {
            **FEEDBACK_ITEM["properties"], "model": {"type": "string", "pattern": NAME_PATTERN}}},
        {"type": "object", "required": ["model", "items"], "additionalProperties": False,
         "properties": {"model": {"type": "string", "pattern": NAME_PATTERN},
                        "items": {"type": "array", "minItems": 1, "items": FEEDBACK_ITEM}}},
    ]
}

INVALID_ITEMS_SCHEMA: dict[str, Any] = {
    "allOf": [ERROR_SCHEMA, {"type": "object", "properties": {"errors": {
        "type": "array", "items": {"type": "object", "required": ["field", "reason"],
                                   "properties": {"field": {"type": "string"},
                                                  "reason": {"type": "string"}}}}}}]}


def feedback_operation(token_required: bool = True) -> dict[str, Any]:
    return _secured({
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
    }, token_required)


def _set_query_maximum(spec: OpenAPISpecification, path: str, name: str,
                       maximum: int) -> None:
    """A bound that comes from the configuration, not the route's signature."""
    # a BentoML API route: always a POST, built by BentoML as a plain dict
    operation = cast(dict[str, Any], spec.paths[path].post)
    for parameter in operation["parameters"]:
        if parameter["name"] == name:
            for branch in parameter["schema"].get("anyOf", [parameter["schema"]]):
                if branch.get("type") == "integer":
                    branch["maximum"] = maximum


def _tidy_headers(spec: OpenAPISpecification) -> None:
    """A header is a string or absent, never JSON null: drop FastAPI's ``anyOf [.., null]``.
    PATCH of a deployment answers 428 without If-Match, so the document marks it required."""
    for path, item in spec.paths.items():
        for method in ("get", "post", "patch", "put", "delete"):
            operation = getattr(item, method, None)
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") != "header":
                    continue
                branches = [b for b in parameter["schema"].get("anyOf", ())
                            if b.get("type") != "null"]
                if len(branches) == 1:
                    rest = {k: v for k, v in parameter["schema"].items() if k != "anyOf"}
                    parameter["schema"] = {**branches[0], **rest}
                if (path, method, parameter["name"]) == (
                        "/admin/deployments/{model}", "patch", "if-match"):
                    parameter["required"] = True


class VigilService(Service):
    @property
    def openapi_spec(self) -> OpenAPISpecification:
        spec = super().openapi_spec
        config = settings()  # the process's, read once: BentoML builds this object at import
        spec.paths["/predict"] = PathItem(post=predict_operation(
            config.auth.inference == "required"))
        spec.paths["/feedback"] = PathItem(post=feedback_operation(
            config.auth.feedback == "required"))
        _set_query_maximum(spec, "/admin/drift/{model}/rebaseline", "rows",
                           config.drift.rebaseline_rows)
        _tidy_headers(spec)
        info = attrs.evolve(spec.info, title="Vigil", version=package_version(), contact=None,
                            description=(
            "Model-serving gateway with built-in monitoring: BentoML-native /predict and "
            "/feedback, and the operator API under /admin."))
        # FastAPI writes JSON Schema 2020-12 (``type: null``, numeric exclusiveMinimum):
        # that is OpenAPI 3.1, whatever version BentoML stamps on the document.
        return attrs.evolve(spec, openapi="3.1.0", info=info)


def package_version(name: str = "vigil") -> str:
    """An installed distribution's version; "unknown" when it is not installed (Vigil run
    from a checkout that never was). For the OpenAPI info and ``vigil_build_info``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# BentoML's own page at "/" loads Google Tag Manager (googletagmanager.com, GTM-WNPGWRM) in
# the operator's browser whatever BENTOML_DO_NOT_TRACK says, and a GitHub corner, and its
# Swagger UI asks validator.swagger.io for a badge; this one is the same Swagger UI from the
# server's own static files, pointed at /docs.json, with the validator off.
DOCS_PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Vigil API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"> </script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"> </script>
    <script>
      window.onload = function () {
        window.ui = SwaggerUIBundle({
          url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true,
          validatorUrl: null,  // no badge fetched from validator.swagger.io
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          plugins: [SwaggerUIBundle.plugins.DownloadUrl], layout: "StandaloneLayout",
        });
      };
    </script>
  </body>
</html>
"""


class DocsPage:
    """ASGI middleware answering ``GET``/``HEAD /`` with ``DOCS_PAGE``; everything else goes
    on unchanged."""

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and \
                scope["method"] in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(DOCS_PAGE)).encode())]})
            await send({"type": "http.response.body",
                        "body": b"" if scope["method"] == "HEAD" else DOCS_PAGE})
            return
        await self.app(scope, receive, send)

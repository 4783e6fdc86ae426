"""The front door: the one path of an inference request, whichever protocol it speaks.

``POST /predict``, the Open Inference Protocol's ``/v2/models/{m}[/versions/{v}]/infer`` and
KServe's ``/v1/models/{m}:predict`` are adapters that only decode a request into a
``Decoded`` and encode a ``Prediction`` back. Everything else happens here, once, in order:

    auth → decode (adapter) → request id → routing key → predict → encode (adapter)

and a ``VigilError`` anywhere on the way is rendered by ``service.httperrors`` and counted.
``POST /feedback`` passes the same door (auth, rendering, counting) with its own role.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from models.errors import InvalidInput, ModelNotFound, VersionNotFound, VigilError
from monitoring.log.ids import new_id
from monitoring.metrics import GatewayMetrics
from service.auth import Principal
from service.errors import PayloadTooLarge
from service.httperrors import error_response
from service.inference import Prediction, Predictor, parse_json, read_body
from service.live import Served
from service.settings import Settings

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
T = TypeVar("T")


def request_id(headers: Mapping[str, str], given: str | None = None) -> str:
    """The client's ``X-Request-ID`` if it is ≤ 128 safe characters, else the id the body
    gave (the OIP ``id``) if safe, else a new one: so feedback can name the prediction by the
    id the client already has."""
    for candidate in (headers.get("x-request-id"), given):
        if candidate and REQUEST_ID_RE.match(candidate):
            return candidate
    return new_id()


def routing_key(served: Served, headers: Mapping[str, str], given: str | None) -> str | None:
    """The sticky split key: the one the body gave, else the deployment's routing-key header."""
    return given or headers.get(served.deployment.routing_key_header.lower()) or None


@dataclass(slots=True)  # not frozen: its __init__ runs on every request, plainly
class Decoded(Generic[T]):
    """A request as an adapter decoded it: what serves it, the input matrix, and what the
    request itself said about routing and its id; ``detail`` is for the adapter's encoder."""

    served: Served
    matrix: np.ndarray
    detail: T
    version: str | None = None      # an explicit version (OIP ``versions/{v}/infer``)
    routing_key: str | None = None  # given in the body
    given_id: str | None = None     # an id given in the body (OIP ``id``)


class Adapter(Protocol[T]):
    """One protocol's decoding and encoding; it reads and checks through the door."""

    async def decode(self, door: FrontDoor, request: Request,
                     names: Mapping[str, str]) -> Decoded[T]: ...

    def encode(self, result: Prediction, decoded: Decoded[T]) -> Response: ...


class Authority(Protocol):
    def require(self, authorization: str | None, role: str) -> Principal: ...


class LiveModels(Protocol):
    def get(self, model: str) -> Served | None: ...


class FrontDoor:
    """One per worker, built from its Settings by ``service.context.build_context``."""

    def __init__(self, settings: Settings, auth: Authority, live: LiveModels,
                 predictor: Predictor, metrics: GatewayMetrics | None) -> None:
        self.auth = auth
        self.live = live
        self.predictor = predictor
        self.metrics = metrics
        self.max_body_bytes = settings.limits.max_body_bytes
        self.max_rows = settings.limits.max_rows
        self.inference_role = "client" if settings.auth.inference == "required" else None
        self.feedback_role = "feedback" if settings.auth.feedback == "required" else None

    # ------------------------------------------------------------------ the two paths

    async def infer(self, request: Request, adapter: Adapter[Any],
                    names: Mapping[str, str]) -> Response:
        start = time.perf_counter()
        try:
            if self.inference_role is not None:
                self.auth.require(request.headers.get("authorization"), self.inference_role)
            decoded = await adapter.decode(self, request, names)
            headers = request.headers
            rid = request_id(headers, decoded.given_id)
            key = routing_key(decoded.served, headers, decoded.routing_key)
            result = await self.predictor.run(decoded.served, decoded.matrix, key,
                                              decoded.version, rid, start)
            return adapter.encode(result, decoded)
        except VigilError as exc:
            return self.refuse(exc)

    async def accept(self, request: Request,
                     handle: Callable[[Any], Awaitable[tuple[int, Any]]]) -> Response:
        """``POST /feedback``: the feedback role (when the config asks for it), the body as
        JSON, then ``handle`` → (status, body)."""
        try:
            if self.feedback_role is not None:
                self.auth.require(request.headers.get("authorization"), self.feedback_role)
            body = await self.read_json(request)
            if body is None:
                raise InvalidInput("body", "is required")
            status, body = await handle(body)
            return Response(orjson.dumps(body), status_code=status, media_type="application/json")
        except VigilError as exc:
            return self.refuse(exc)

    def refuse(self, exc: VigilError) -> Response:
        response = error_response(exc)
        if self.metrics is not None:
            self.metrics.request_errors.labels(str(response.status_code)).inc()
        return response

    # ------------------------------------------------------------------ for the adapters

    async def read_json(self, request: Request) -> Any:
        """The body as JSON: 413 over ``limits.max_body_bytes``, 422 when it does not parse."""
        return parse_json(await self.read(request), self.max_body_bytes)

    async def read(self, request: Request) -> bytes:
        return await read_body(request, self.max_body_bytes)

    def served(self, model: str, version: str | None = None) -> Served:
        """What serves ``model`` (and holds ``version``, when one is named), or 404."""
        served = self.live.get(model)
        if served is None:
            raise ModelNotFound(model)
        if version is not None and version not in served.runtimes:
            raise VersionNotFound(model, version)
        return served

    def check_rows(self, n: int, field: str) -> None:
        if n > self.max_rows:
            raise PayloadTooLarge(field, f"{n} rows; the limit is {self.max_rows} per request")

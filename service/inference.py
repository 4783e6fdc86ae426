"""The path of one prediction request (docs/architecture.md, The path of a request),
independent of the HTTP framework.

decode + validate → route → run the primary session → answer; then, off the response path,
emit the event (naming the shadows the Monitor is to run on it) and record metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.errors import InputInvalid
from models.inputs import decode_records, decode_rows
from monitoring.log.events import EventSink, PredictionEvent
from monitoring.log.ids import new_id
from monitoring.metrics import GatewayMetrics
from service.errors import (
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    VersionNotFound,
    VigilError,
)
from service.live import LiveDeployments, Served
from service.routing import Route, route
from service.settings import Settings

log = logging.getLogger("vigil.inference")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
PREDICT_FIELDS = {"model", "inputs", "instances", "routing_key"}
OFFLOAD_ROWS = 64  # batches above this run in a thread so the event loop keeps serving


def request_id_from(headers: Mapping[str, str]) -> str:
    """The client's ``X-Request-ID`` when it is ≤ 128 safe characters, else a new one."""
    given = headers.get("x-request-id")
    if given and REQUEST_ID_RE.match(given):
        return given
    return new_id()


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is over ``limit`` bytes (by its
    declared length, or while it streams in)."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge("body", f"{declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("body", f"more than {limit} bytes; the limit is {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, limit: int) -> Any:
    if len(raw) > limit:
        raise PayloadTooLarge("body", f"{len(raw)} bytes; the limit is {limit}")
    if not raw.strip():
        raise InvalidInput("body", "is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})") from None


@dataclass(frozen=True)
class Prediction:
    """What the HTTP layer renders: the body and the headers."""

    body: dict[str, Any]
    request_id: str
    revision: int
    route: Route


class Predictor:
    def __init__(self, settings: Settings, live: LiveDeployments, sink: EventSink,
                 metrics: GatewayMetrics | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.live = live
        self.sink = sink
        self.metrics = metrics
        self.rand = rand

    def served(self, model: Any) -> Served:
        if not isinstance(model, str) or not model:
            raise InvalidInput("model", "is required and must be a model name")
        served = self.live.get(model)
        if served is None:
            raise ModelNotFound(model)
        return served

    def check_rows(self, n: int, field: str) -> None:
        limit = self.settings.limits.max_rows
        if n > limit:
            raise PayloadTooLarge(field, f"{n} rows; the limit is {limit} per request")

    def decode_body(self, body: Any) -> tuple[Served, np.ndarray, str | None]:
        """Validate a ``/predict`` body; returns what serves it, the matrix and the key."""
        if not isinstance(body, dict):
            raise InvalidInput("body", "must be a JSON object")
        unknown = sorted(set(body) - PREDICT_FIELDS)
        if unknown:
            raise InvalidInput(unknown[0] or repr(unknown[0]),
                               f"unknown field (allowed: {sorted(PREDICT_FIELDS)})")
        served = self.served(body.get("model"))
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
            self.check_rows(len(rows), field)
        try:
            matrix = (decode_records if has_inputs else decode_rows)(served.card, rows, field)
        except InputInvalid as exc:
            raise InvalidInput(exc.field, exc.reason) from None
        return served, matrix, key

    async def predict(self, body: Any, headers: Mapping[str, str]) -> Prediction:
        """Answer a ``/predict`` body."""
        start = time.perf_counter()
        request_id = request_id_from(headers)
        served, matrix, key = self.decode_body(body)
        if key is None:
            key = headers.get(served.deployment.routing_key_header.lower()) or None
        return await self.run(served, matrix, key, None, request_id, start)

    async def run(self, served: Served, matrix: np.ndarray, key: str | None,
                  version: str | None, request_id: str, start: float) -> Prediction:
        """Route, run the primary, and hand off the rest; shared by every protocol."""
        deployment = served.deployment
        chosen = route(deployment, key, version, self.rand)
        if chosen is None:
            raise VersionNotFound(deployment.model, version or "")
        runtime = served.runtimes[chosen.version]
        began = time.perf_counter()
        try:
            if len(matrix) > OFFLOAD_ROWS:
                outputs = await asyncio.to_thread(runtime.predict, matrix)
            else:
                outputs = runtime.predict(matrix)
        except Exception as exc:  # a broken model is a counted, logged 500, never a hang
            self._failed(served, chosen, matrix, request_id, start, exc)
            raise VigilError(f"model '{deployment.model}' version '{chosen.version}' failed "
                             "on this input", reason=type(exc).__name__) from None
        done = time.perf_counter()
        if self.metrics is not None:
            self.metrics.inference.labels(deployment.model, chosen.version).observe(done - began)
        latency = done - start
        body = {"model": deployment.model, "version": chosen.version,
                "variant": chosen.variant, "request_id": request_id, "predictions": outputs}
        self._after(served, chosen, matrix, outputs, request_id, latency)
        return Prediction(body, request_id, deployment.revision, chosen)

    def _failed(self, served: Served, chosen: Route, matrix: np.ndarray, request_id: str,
                start: float, exc: Exception) -> None:
        model = served.deployment.model
        log.exception("inference failed: %s:%s", model, chosen.version, exc_info=exc)
        if self.metrics is not None:
            self.metrics.requests.labels(model, chosen.version, chosen.variant, "error").inc()
        self.sink.emit(PredictionEvent(
            request_id=request_id, model=model, version=chosen.version, variant=chosen.variant,
            time=time.time(), rows=len(matrix), latency_seconds=time.perf_counter() - start,
            status="error", inputs=matrix, features=served.log_features, outputs=None,
            error=f"{type(exc).__name__}: {exc}"[:500]))

    def _after(self, served: Served, chosen: Route, matrix: np.ndarray,
               outputs: list[dict[str, Any]], request_id: str, latency: float) -> None:
        model = served.deployment.model
        if self.metrics is not None:
            self.metrics.requests.labels(model, chosen.version, chosen.variant, "ok").inc()
            self.metrics.rows.labels(model, chosen.version, chosen.variant).inc(len(matrix))
            self.metrics.latency.labels(model, chosen.variant).observe(latency)
        self.sink.emit(PredictionEvent(
            request_id=request_id, model=model, version=chosen.version, variant=chosen.variant,
            time=time.time(), rows=len(matrix), latency_seconds=latency, status="ok",
            inputs=matrix, features=served.log_features, outputs=outputs,
            shadows=chosen.shadows))  # the Monitor runs them on the logged record

"""A prediction, independent of the HTTP framework and of the protocol it came in by:
route → run the primary session → answer; then, off the response path, emit the event (naming
the shadows the Monitor is to run on it) and record metrics. Also the body reading every
adapter shares (a limit in bytes, JSON by orjson).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from models.errors import (
    InferenceFailed,
    InvalidInput,
    VersionNotFound,
)
from monitoring.log.events import EventSink, PredictionEvent
from monitoring.metrics import GatewayMetrics
from service.errors import PayloadTooLarge
from service.live import Served
from service.routing import Route, route

log = logging.getLogger("vigil.inference")
OFFLOAD_ROWS = 64  # batches above this run in a thread so the event loop keeps serving


class Streamed(Protocol):
    """A request whose body arrives in chunks (Starlette's ``Request``)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def stream(self) -> AsyncIterator[bytes]: ...


async def read_body(request: Streamed, limit: int) -> bytes:
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
    """Route, run the primary session, and hand the rest off the response path (the event
    for the log, the metrics); shared by every protocol (``service.front``)."""

    def __init__(self, sink: EventSink, metrics: GatewayMetrics | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.sink = sink
        self.metrics = metrics
        self.rand = rand

    async def run(self, served: Served, matrix: np.ndarray, key: str | None,
                  version: str | None, request_id: str, start: float) -> Prediction:
        """The prediction for ``matrix``: routed by ``key`` (or to ``version``, when named)."""
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
            raise InferenceFailed(deployment.model, chosen.version, exc) from None
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

"""The Gateway BentoML service: ``POST /predict``, ``/metrics``, and the admin app at ``/admin``.

Run with ``bentoml serve`` (bentofile.yaml names ``service.gateway:Gateway``). Each worker
builds its own WorkerContext; the store is the only thing workers share.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import bentoml
import orjson
from _bentoml_sdk.io_models import IODescriptor
from bentoml._internal.context import server_context
from fastapi import FastAPI
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request
from starlette.responses import Response

from monitoring.metrics import GatewayMetrics, exposition
from service import admin, openapi, protocol
from service.bootstrap import bootstrap
from service.context import WorkerContext, build_context
from service.drain import delay_sigterm, exit_with_parent
from service.errors import InvalidInput, VigilError
from service.fastpath import FastRoutes
from service.feedback import accept_feedback
from service.httperrors import install
from service.inference import parse_json, read_body
from service.limits import AdmissionMiddleware
from service.monitor import Monitor
from service.process import tune_gc
from service.settings import load_settings_or_exit
from service.tls import bentoml_ssl

log = logging.getLogger("vigil.gateway")


def build_versions() -> tuple[str, str, str, str]:
    import platform

    v = openapi.package_version
    return v("vigil"), platform.python_version(), v("bentoml"), v("onnxruntime")
SETTINGS = load_settings_or_exit()  # the decorator's arguments are read at import


class RawBody(IODescriptor):
    """A JSON body read and validated by Vigil itself (BentoML's pydantic validation would
    answer 400 and log a traceback); the subclasses' fields only document it."""

    raw: SkipJsonSchema[Any] = None

    @classmethod
    def _wrap(cls, raw: Any) -> Any:
        empty = {name: None for name in cls.model_fields if name != "raw"}
        return cls.model_construct(raw=raw, **empty)

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Any:
        return cls._wrap(await read_raw(request))


class PredictBody(RawBody):
    """``POST /predict``."""

    model: str = Field(description="the model to ask, e.g. breast_cancer")
    inputs: list[dict[str, Any]] | None = Field(
        None, description="named records, one per row: {feature: value}")
    instances: list[list[Any]] | None = Field(
        None, description="rows of values in the card's feature order (instead of inputs)")
    routing_key: str | None = Field(
        None, description="sticky canary split key (else the routing-key header)")


class FeedbackBody(RawBody):
    """``POST /feedback``: one label, or a batch under ``items``."""

    model: str = Field(description="the model whose predictions are labelled")
    request_id: str | None = Field(None, description="the request_id of the prediction")
    label: str | int | None = Field(None, description="a classifier's true class (or index)")
    value: float | None = Field(None, description="a regressor's true value")
    row: int | None = Field(None, description="the row of a batch request (default 0)")
    items: list[dict[str, Any]] | None = Field(
        None, description="a batch: [{request_id, label | value, row?}, ...]")


def _json(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")


BodyHandler = Callable[[Any], Awaitable[tuple[int, Any, dict[str, str]]]]
INFERENCE_ROLE = "client" if SETTINGS.auth.inference == "required" else None


async def answer(wctx: WorkerContext, headers: Mapping[str, str], raw: Any, role: str | None,
                 handle: BodyHandler) -> Response:
    """The shared shape of Vigil's BentoML APIs: the role check (when the config asks for
    it), the body's own parse error, then ``handle``; every VigilError becomes its status and
    envelope, counted."""
    try:
        if role is not None:
            wctx.auth.require(headers.get("authorization"), role)
        if isinstance(raw, VigilError):
            raise raw
        if raw is None:
            raise InvalidInput("body", "is required")
        status, body, out = await handle(raw)
    except VigilError as exc:
        if wctx.metrics is not None:
            wctx.metrics.request_errors.labels(str(exc.status)).inc()
        status, body, out = exc.status, exc.to_body(), exc.headers
    return _json(status, body, out)


def predict_handler(wctx: WorkerContext, headers: Mapping[str, str]) -> BodyHandler:
    async def handle(body: Any) -> tuple[int, Any, dict[str, str]]:
        result = await wctx.predictor.predict(body, headers)
        return 200, result.body, {"X-Request-ID": result.request_id,
                                  "X-Vigil-Revision": str(result.revision),
                                  "X-Vigil-Variant": result.route.variant}
    return handle


async def read_raw(request: Request) -> Any:
    """The body as parsed JSON, or the VigilError saying why it is not (answered after the
    role check, as BentoML's input descriptor would)."""
    limit = SETTINGS.limits.max_body_bytes
    try:
        return parse_json(await read_body(request, limit), limit)
    except VigilError as exc:
        return exc


async def fast_predict(wctx: WorkerContext, request: Request) -> Response:
    """``POST /predict`` on the fast path (``service.fastpath``): the same steps as the
    BentoML API below, without BentoML's route and input descriptor machinery."""
    return await answer(wctx, request.headers, await read_raw(request), INFERENCE_ROLE,
                        predict_handler(wctx, request.headers))


root_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
root_app.include_router(protocol.router)  # OIP v2 and KServe V1 (a "/"-mount: see REFERENCE)
install(root_app)


@root_app.get("/metrics", include_in_schema=True, summary="Prometheus metrics of every process",
              response_class=Response,
              responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics() -> Response:
    data = await asyncio.to_thread(exposition)
    return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")


@bentoml.asgi_app(root_app, path="/")
@bentoml.asgi_app(admin.app, path="/admin")
@bentoml.service(
    name="vigil",
    workers=SETTINGS.server.workers,
    traffic={"timeout": SETTINGS.server.request_timeout_seconds},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    runner_probe={"enabled": False},
    # every URL excluded: the OpenTelemetry middleware passes requests straight through
    **({} if SETTINGS.server.tracing else {"tracing": {"excluded_urls": [".*"]}}),
    **bentoml_ssl(SETTINGS.server.tls),  # HTTPS (and mTLS) when server.tls is set
    service_class=openapi.VigilService,
)
class Gateway:
    if SETTINGS.monitor.enabled:
        monitor = bentoml.depends(Monitor)  # started by bentoml serve; never awaited on a request

    @bentoml.on_deployment
    def prepare() -> None:  # type: ignore[misc]
        """Once per server start, before any worker: migrate the store, seed the demo."""
        bootstrap(SETTINGS)

    def __init__(self) -> None:
        worker = f"gw{server_context.worker_index or 0}"
        metrics = GatewayMetrics(
            latency_objective_seconds=SETTINGS.server.latency_objective_seconds)
        self.ctx: WorkerContext = build_context(SETTINGS, metrics, worker=worker)
        self.ctx.live.refresh()
        admin.app.state.ctx = self.ctx
        root_app.state.ctx = self.ctx
        self._poll: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def start(self) -> None:
        if SETTINGS.server.gc_tuning:
            tune_gc()
        self.ctx.publish_gauges()
        if self.ctx.metrics is not None:
            self.ctx.metrics.build_info.labels(*build_versions()).set(1)
        self._poll = asyncio.get_running_loop().create_task(self._watch())
        delay_sigterm(SETTINGS.server.drain_seconds, self._drain)
        self._orphan = asyncio.get_running_loop().create_task(exit_with_parent())

    def _drain(self) -> None:
        self.ctx.draining = True

    async def _watch(self) -> None:
        interval = SETTINGS.store.deployment_poll_seconds
        while True:
            try:
                changed = await asyncio.to_thread(self.ctx.live.refresh)
                if changed:
                    self.ctx.publish_gauges()
                self.ctx.publish_runtime()
            except Exception:
                log.exception("deployment refresh failed; serving the last deployment")
                if self.ctx.metrics is not None:
                    self.ctx.metrics.store_errors.labels("deployment_refresh").inc()
            await asyncio.sleep(interval)

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        if self.ctx.log is not None:  # drain, fsync and close this worker's segment
            await asyncio.to_thread(self.ctx.log.close)

    def __is_ready__(self) -> bool:
        return not self.ctx.draining and bool(self.ctx.live.models())

    async def _answer(self, ctx: bentoml.Context, raw: Any, role: str | None,
                      handle: BodyHandler) -> Response:
        """BentoML passes a Starlette Response through untouched, skipping its per-response
        schema rebuild, but overwrites its status with ``ctx.response.status_code`` — so both
        are set."""
        response = await answer(self.ctx, ctx.request.headers, raw, role, handle)
        ctx.response.status_code = response.status_code
        return response

    @bentoml.api(route="/predict", input_spec=PredictBody)
    async def predict(self, ctx: bentoml.Context, raw: Any = None, model: Any = None,
                      inputs: Any = None, instances: Any = None,
                      routing_key: Any = None) -> dict[str, Any]:
        # the annotation only feeds BentoML's output spec; a Response goes out (see _answer)
        return await self._answer(ctx, raw, INFERENCE_ROLE,  # type: ignore[return-value]
                                  predict_handler(self.ctx, ctx.request.headers))

    @bentoml.api(route="/feedback", input_spec=FeedbackBody)
    async def feedback(self, ctx: bentoml.Context, raw: Any = None, model: Any = None,
                       request_id: Any = None, label: Any = None, value: Any = None,
                       row: Any = None, items: Any = None) -> dict[str, Any]:
        """Ground-truth labels for earlier predictions, joined by request_id in the Monitor.
        202 with the count accepted; 422 listing every bad item (none is taken then)."""
        async def handle(body: Any) -> tuple[int, Any, dict[str, str]]:
            return 202, accept_feedback(self.ctx, body), {}

        role = "feedback" if SETTINGS.auth.feedback == "required" else None
        return await self._answer(ctx, raw, role, handle)  # type: ignore[return-value]


def _refused(status: int) -> None:
    """Admission refusals, counted by the worker that answered them."""
    metrics = root_app.state.ctx.metrics if hasattr(root_app.state, "ctx") else None
    if metrics is not None:
        metrics.request_errors.labels(str(status)).inc()


Gateway.add_asgi_middleware(AdmissionMiddleware,
                            max_concurrency=SETTINGS.limits.max_concurrency,
                            max_header_bytes=SETTINGS.limits.max_header_bytes,
                            max_body_bytes=SETTINGS.limits.max_body_bytes,
                            max_inflight_body_bytes=SETTINGS.limits.max_inflight_body_bytes,
                            on_refuse=_refused)
# inside admission control (BentoML builds the user middlewares first-added outermost)
Gateway.add_asgi_middleware(FastRoutes,
                            routes=[*protocol.FAST_ROUTES, (re.compile("/predict"), fast_predict)],
                            context=lambda: getattr(root_app.state, "ctx", None),
                            prefixes=("/v2/models/", "/v1/models/", "/predict"))
# innermost: the inference POSTs are answered above and never pass through it
Gateway.add_asgi_middleware(openapi.DocsPage)  # "/" without BentoML's tag manager

"""The Gateway BentoML service: ``POST /predict`` and ``/feedback``, ``/metrics``, the
inference protocols at ``/`` and the admin app at ``/admin``.

Run with ``bentoml serve`` (bentofile.yaml names ``service.gateway:Gateway``). BentoML builds
``Gateway()`` with no arguments, once per worker, after this module has declared every route:
``Gateway.__init__`` is the worker's composition root — it takes the process's ``settings()``
and builds the WorkerContext that the routes ask for per request
(``service.context.current_context``). The store is the only thing workers share.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import bentoml
from _bentoml_sdk.io_models import IODescriptor
from bentoml._internal.context import server_context
from fastapi import FastAPI
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from monitoring.metrics import GatewayMetrics, exposition
from service import console, openapi, protocol
from service.admin.app import create_app as create_admin_app
from service.bootstrap import bootstrap
from service.context import WorkerContext, build_context, built_context, current_metrics
from service.drain import delay_sigterm, exit_with_parent
from service.fastpath import FastRoutes
from service.feedback import accept_feedback
from service.httperrors import install
from service.limits import ASGI, AdmissionMiddleware
from service.monitor import Monitor
from service.predict import PREDICT
from service.process import tune_gc
from service.settings import settings
from service.tls import bentoml_ssl

log = logging.getLogger("vigil.gateway")


def build_versions() -> tuple[str, str, str, str]:
    import platform

    v = openapi.package_version
    return v("vigil"), platform.python_version(), v("bentoml"), v("onnxruntime")


class DocumentedBody(IODescriptor):
    """Fields that only document a body in the OpenAPI document: the front door
    (``service.front``) reads and validates it itself — BentoML's pydantic validation would
    answer 400 and log a traceback — so nothing is read here."""

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Any:
        return cls.model_construct(**{name: None for name in cls.model_fields})


class PredictBody(DocumentedBody):
    """``POST /predict``."""

    model: str = Field(description="the model to ask, e.g. breast_cancer")
    inputs: list[dict[str, Any]] | None = Field(
        None, description="named records, one per row: {feature: value}")
    instances: list[list[Any]] | None = Field(
        None, description="rows of values in the card's feature order (instead of inputs)")
    routing_key: str | None = Field(
        None, description="sticky canary split key (else the routing-key header)")


class FeedbackBody(DocumentedBody):
    """``POST /feedback``: one label, or a batch under ``items``."""

    model: str = Field(description="the model whose predictions are labelled")
    request_id: str | None = Field(None, description="the request_id of the prediction")
    label: str | int | None = Field(None, description="a classifier's true class (or index)")
    value: float | None = Field(None, description="a regressor's true value")
    row: int | None = Field(None, description="the row of a batch request (default 0)")
    items: list[dict[str, Any]] | None = Field(
        None, description="a batch: [{request_id, label | value, row?}, ...]")


async def fast_predict(ctx: WorkerContext, request: Request) -> Response:
    """``POST /predict`` on the fast path (``service.fastpath``): the front door with the
    ``/predict`` adapter, exactly as the BentoML API below."""
    return await ctx.front.infer(request, PREDICT, {})


root_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
root_app.include_router(protocol.router)  # OIP v2 and KServe V1 (mounted at "/")
admin_app = create_admin_app()
install(root_app, current_metrics)


@root_app.get("/metrics", include_in_schema=True, summary="Prometheus metrics of every process",
              response_class=Response,
              responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics() -> Response:
    data = await asyncio.to_thread(exposition)
    return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")


# The settings read at import, and only these: BentoML takes the service's arguments and its
# dependencies from the class as this module declares it, before any worker exists, and builds
# ``Gateway()`` with no arguments — so nothing can be passed in. Everything else reads the
# same cached ``settings()`` in ``__init__`` (or, for the middlewares, when a worker builds them).
@bentoml.asgi_app(root_app, path="/")
@bentoml.asgi_app(admin_app, path="/admin")
@bentoml.asgi_app(console.app, path="/ui")  # the operator console: static files
@bentoml.service(
    name="vigil",
    workers=settings().server.workers,
    traffic={"timeout": settings().server.request_timeout_seconds},
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    runner_probe={"enabled": False},
    # every URL excluded: the OpenTelemetry middleware passes requests straight through
    **({} if settings().server.tracing else {"tracing": {"excluded_urls": [".*"]}}),
    **bentoml_ssl(settings().server.tls),  # HTTPS (and mTLS) when server.tls is set
    service_class=openapi.VigilService,
)
class Gateway:
    if settings().monitor.enabled:  # an import-time read too: BentoML starts dependencies
        monitor = bentoml.depends(Monitor)  # started by bentoml serve; never awaited on a request

    @bentoml.on_deployment
    def prepare() -> None:
        """Once per server start, before any worker: migrate the store, seed the demo."""
        bootstrap(settings())

    def __init__(self) -> None:
        self.settings = settings()
        worker = f"gw{server_context.worker_index or 0}"
        metrics = GatewayMetrics(
            latency_objective_seconds=self.settings.server.latency_objective_seconds)
        self.ctx: WorkerContext = build_context(self.settings, metrics, worker=worker)
        self.ctx.live.refresh()
        self._poll: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def start(self) -> None:
        if self.settings.server.gc_tuning:
            tune_gc()
        self.ctx.publish_gauges()
        if self.ctx.metrics is not None:
            self.ctx.metrics.build_info.labels(*build_versions()).set(1)
        self._poll = asyncio.get_running_loop().create_task(self._watch())
        delay_sigterm(self.settings.server.drain_seconds, self._drain)
        self._orphan = asyncio.get_running_loop().create_task(exit_with_parent())

    def _drain(self) -> None:
        self.ctx.draining = True

    async def _watch(self) -> None:
        interval = self.settings.store.deployment_poll_seconds
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
        """``/readyz``: ready as ``/v2/health/ready`` is (``WorkerContext.readiness``). On
        False BentoML answers a fixed sentence; the HTTPException raised instead is rendered
        with its detail (plain text), so the probe names the model, version and why."""
        problem = self.ctx.readiness()
        if problem is None:
            return True
        raise HTTPException(503, detail=problem.message,
                            headers={"Retry-After": str(problem.retry_after)})

    @staticmethod
    def _respond(ctx: bentoml.Context, response: Response) -> Any:
        """BentoML passes a Starlette Response through untouched, skipping its per-response
        schema rebuild, but overwrites its status with ``ctx.response.status_code`` — so both
        are set. (The APIs' annotations only feed BentoML's output spec.)"""
        ctx.response.status_code = response.status_code
        return response

    @bentoml.api(route="/predict", input_spec=PredictBody)
    async def predict(self, ctx: bentoml.Context, model: Any = None, inputs: Any = None,
                      instances: Any = None, routing_key: Any = None) -> dict[str, Any]:
        return self._respond(ctx, await self.ctx.front.infer(
            ctx.request, PREDICT, {}))

    @bentoml.api(route="/feedback", input_spec=FeedbackBody)
    async def feedback(self, ctx: bentoml.Context, model: Any = None, request_id: Any = None,
                       label: Any = None, value: Any = None, row: Any = None,
                       items: Any = None) -> dict[str, Any]:
        """Ground-truth labels for earlier predictions, joined by request_id in the Monitor.
        202 with the count accepted; 422 listing every bad item (none is taken then)."""
        async def handle(body: Any) -> tuple[int, Any]:
            return 202, accept_feedback(self.ctx, body)

        return self._respond(ctx, await self.ctx.front.accept(
            ctx.request, handle))


def _refused(status: int) -> None:
    """Admission refusals, counted by the worker that answered them."""
    metrics = current_metrics()
    if metrics is not None:
        metrics.request_errors.labels(str(status)).inc()


class Admission(AdmissionMiddleware):
    """Admission control with this process's limits, built by BentoML in each worker."""

    def __init__(self, app: ASGI) -> None:
        limits = settings().limits
        super().__init__(app, max_concurrency=limits.max_concurrency,
                         max_header_bytes=limits.max_header_bytes,
                         max_body_bytes=limits.max_body_bytes,
                         max_inflight_body_bytes=limits.max_inflight_body_bytes,
                         on_refuse=_refused)


GATEWAY: Any = Gateway  # a bentoml Service at run time; mypy sees the class it wraps
GATEWAY.add_asgi_middleware(Admission)
# inside admission control (BentoML builds the user middlewares first-added outermost)
GATEWAY.add_asgi_middleware(FastRoutes,
                            routes=[*protocol.FAST_ROUTES, (re.compile("/predict"), fast_predict)],
                            context=built_context,
                            prefixes=("/v2/models/", "/v1/models/", "/predict"))
# innermost: the inference POSTs are answered above and never pass through it
GATEWAY.add_asgi_middleware(openapi.DocsPage)  # "/" without BentoML's tag manager

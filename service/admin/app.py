"""The operator API's app: one router per area, the error envelope, the worker context."""

from __future__ import annotations

from fastapi import FastAPI

from service.admin.audit import router as audit
from service.admin.cluster import router as cluster
from service.admin.deployments import router as deployments
from service.admin.drift import router as drift
from service.admin.experiments import router as experiments
from service.admin.models import router as models
from service.admin.rollouts import router as rollouts
from service.admin.webhooks import router as webhooks
from service.console.api import router as console
from service.context import WorkerContext, current_metrics
from service.httperrors import JSONBody, install

# document order
ROUTERS = (models, deployments, audit, drift, webhooks, rollouts, experiments, cluster,
           console)


def create_app(ctx: WorkerContext | None = None) -> FastAPI:
    """The admin app, to mount at ``/admin``. Without ``ctx`` (the Gateway: BentoML mounts
    apps at import and builds each worker's context in ``__init__``) routes find the
    worker's own context per request."""
    app = FastAPI(title="Vigil admin API", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None, default_response_class=JSONBody)
    install(app, (lambda: ctx.metrics) if ctx is not None else current_metrics)
    for router in ROUTERS:
        app.include_router(router)
    app.state.ctx = ctx
    return app

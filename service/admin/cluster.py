"""Admin route for the replicas and the log's partitions (``log.backend: nats``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.admin.deps import AUTH_ERRORS, ctx_of, require
from service.auth import Principal
from service.cluster import cluster_view
from service.httperrors import error_responses

router = APIRouter()


@router.get("/cluster", summary="The replicas seen, each partition's lease and lag",
            responses=error_responses(*AUTH_ERRORS))
async def cluster(request: Request,
                  _: Annotated[Principal, Depends(require("viewer", "cluster.read"))]
                  ) -> dict[str, Any]:
    """``{"replicas": [{id, url, last_seen, monitor_pid}], "partitions": [{partition, owner,
    generation, lease_expires_at, lag_events, lag_seconds}]}``; on the local log (one
    machine) both lists hold what a Monitor on NATS has written, usually nothing."""
    ctx = ctx_of(request)
    return await asyncio.to_thread(cluster_view, ctx.engine, ctx.settings.log.partitions)

"""Admin route for the audit log: the newest rows, newest first."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from service.admin.deps import AUTH_ERRORS, ctx_of, require
from service.auth import Principal
from service.httperrors import error_responses

router = APIRouter()


@router.get("/audit", summary="The newest audit rows, newest first",
            responses=error_responses(*AUTH_ERRORS, 422))
async def audit(request: Request,
                _: Annotated[Principal, Depends(require("viewer", "audit.read"))],
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                action: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    ctx = ctx_of(request)
    rows = await asyncio.to_thread(ctx.audit.recent, limit, action)
    return {"items": [r.to_public() for r in rows]}

"""The inference routes — ``POST /predict``, the Open Inference Protocol's and KServe V1's —
dispatched ahead of the routers.

A ``POST /v2/models/{m}/infer`` used to walk BentoML's router (every API route, then the
``/admin`` and ``/`` mounts), FastAPI's own middleware stack and its dependency solver before
reaching a handler that reads its body itself and returns a ready ``Response``. Profiled
with py-spy under ``hey -c 16`` on 2 workers, that walk was about a third of a worker's CPU.
This middleware sits inside Vigil's admission control (limits, concurrency, in-flight body
bytes still apply) and calls the very same handlers (``service.protocol.FAST_ROUTES``, and
``service.gateway.fast_predict``; each is the front door, ``service.front``) for a POST
whose path matches one exactly, with names that already satisfy the routes' patterns.
(``/predict`` through BentoML's API route and input descriptor cost about as much.)
Everything else — other methods, malformed names, every other path — goes on to the
routers unchanged, so the answers (405 with ``Allow``, 422 naming the field, 404) and the
OpenAPI document stay the routers'.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from service.limits import ASGI, Receive, Scope, Send

RouteHandler = Callable[..., Awaitable[Response]]  # (ctx, request, **path names) -> Response
C = TypeVar("C")


class FastRoutes(Generic[C]):
    def __init__(self, app: ASGI, routes: list[tuple[re.Pattern[str], RouteHandler]],
                 context: Callable[[], C | None],
                 prefixes: tuple[str, ...] = ("/v2/models/", "/v1/models/")) -> None:
        self.app = app
        self.routes = routes
        self.context = context  # the worker's context, once the service has built it
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and \
                scope["path"].startswith(self.prefixes):
            ctx = self.context()
            if ctx is not None:
                path = scope["path"]
                for pattern, handler in self.routes:
                    match = pattern.fullmatch(path)
                    if match is not None:
                        response = await handler(ctx, Request(scope, receive),
                                                 **match.groupdict())
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)

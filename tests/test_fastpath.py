"""The fast path sends exactly the infer POSTs whose names satisfy the routes' patterns to
their handlers, and everything else on to the routers (whose answers stay the documented
ones: 405 with Allow, 422 naming the field, 404)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from service import protocol
from service.fastpath import FastRoutes


def call(path: str, method: str = "POST", ctx: Any = "ctx") -> tuple[str, dict[str, Any]]:
    seen: dict[str, Any] = {}

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        seen["router"] = scope["path"]
        await Response(b"router", status_code=404)(scope, receive, send)

    def handler(name: str) -> Any:
        async def h(c: Any, request: Request, **names: str) -> Response:
            seen.update(handler=name, ctx=c, names=names, path=request.url.path)
            return Response(b"fast")
        return h

    routes = [(pattern, handler(fn.__name__)) for pattern, fn in protocol.FAST_ROUTES]
    app = FastRoutes(fallback, routes, context=lambda: None if ctx is None else ctx)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [], "root_path": ""}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return body.decode(), seen


def test_infer_posts_go_straight_to_the_protocol_handlers() -> None:
    body, seen = call("/v2/models/breast_cancer/infer")
    assert body == "fast" and seen["names"] == {"model": "breast_cancer"}
    assert seen["handler"] == "_infer" and seen["ctx"] == "ctx" and "router" not in seen
    body, seen = call("/v2/models/breast_cancer/versions/v2/infer")
    assert seen["names"] == {"model": "breast_cancer", "version": "v2"}
    body, seen = call("/v1/models/diabetes:predict")
    assert body == "fast" and seen["handler"] == "_v1_predict"
    assert seen["names"] == {"model": "diabetes"}


@pytest.mark.parametrize(("path", "method"), [
    ("/v2/models/breast_cancer/infer", "GET"),  # the router's 405 with Allow
    ("/v2/models/Breast_Cancer/infer", "POST"),  # the route's 422 naming the model
    ("/v2/models/.v1/infer", "POST"),
    ("/v2/models/breast_cancer/infer/more", "POST"),  # the router's 404
    ("/v2/models/breast_cancer", "POST"),
    ("/v1/models/m:explain", "POST"),
    ("/predict", "POST"),
])
def test_everything_else_goes_on_to_the_routers(path: str, method: str) -> None:
    body, seen = call(path, method)
    assert body == "router" and seen == {"router": path}


def test_before_the_worker_has_a_context_the_routers_answer() -> None:
    body, seen = call("/v2/models/breast_cancer/infer", ctx=None)
    assert body == "router"


def test_the_fast_routes_are_the_documented_routes_handlers() -> None:
    # the same functions the FastAPI routes call: one behaviour, two ways in
    assert {fn for _, fn in protocol.FAST_ROUTES} == {protocol._infer, protocol._v1_predict}
    documented = {r.path for r in protocol.router.routes if "POST" in getattr(r, "methods", ())}
    assert documented == {"/v2/models/{model}/infer",
                          "/v2/models/{model}/versions/{version}/infer",
                          "/v1/models/{model}:predict"}

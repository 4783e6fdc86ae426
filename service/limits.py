"""Admission control in front of every route, as a plain ASGI middleware.

* Headers over ``limits.max_header_bytes`` answer **431** (any route).
* More than ``limits.max_concurrency`` inference requests in flight in this worker answer
  **503 with ``Retry-After``** at once, instead of queueing until a timeout: overload is
  answered, never hung. (BentoML's own ``max_concurrency`` answers 429 without
  ``Retry-After``, from outside any middleware we could add — so it stays unset.) Health,
  metrics and admin routes are not limited, so probes and operators get through an overload.
* Request bodies in flight in this worker are held under ``limits.max_inflight_body_bytes``
  (by Content-Length; a body without one is charged ``limits.max_body_bytes``): past it,
  **503 with ``Retry-After``**, so a flood of large requests cannot grow memory without
  bound. A declared length over ``limits.max_body_bytes`` answers **413** before the body is
  read.
* A path no route serves answers **404 in Vigil's JSON envelope**: BentoML's router answers
  ``Not Found`` as text/plain, which no client can parse as the documented error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]
INFERENCE_PREFIXES = ("/predict", "/feedback", "/v2/models/", "/v1/models/")


def is_inference(path: str) -> bool:
    return path.startswith(INFERENCE_PREFIXES) and (
        not path.startswith(("/v2/models/", "/v1/models/"))
        or path.endswith(("/infer", ":predict")))


async def _answer(send: Callable[[Any], Awaitable[None]], status: int, body: dict[str, Any],
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def _json_not_found(scope: Scope, send: Callable[[Any], Awaitable[None]]
                    ) -> Callable[[Any], Awaitable[None]]:
    """Wrap ``send`` so the router's text/plain 404 becomes the JSON envelope."""
    replaced = False

    async def wrapped(message: Any) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] == 404 and any(
                k == b"content-type" and v.startswith(b"text/plain")
                for k, v in message.get("headers", ())):
            replaced = True
            path = scope.get("path", "")[:200]
            await _answer(send, 404, {"error": f"no route serves {path!r}", "field": "path",
                                      "reason": "not found"})
            return
        if replaced:  # the router's own body (and any more of it) is dropped
            return
        await send(message)

    return wrapped


def _declared_length(scope: Scope) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


class AdmissionMiddleware:
    def __init__(self, app: ASGI, max_concurrency: int = 256, max_header_bytes: int = 16384,
                 max_body_bytes: int = 4 * 2**20, max_inflight_body_bytes: int = 64 * 2**20,
                 on_refuse: Callable[[int], None] | None = None) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.max_inflight_body_bytes = max_inflight_body_bytes
        self.on_refuse = on_refuse
        self.in_flight = 0
        self.inflight_bytes = 0

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        if size > self.max_header_bytes:
            self._refused(431)
            await _answer(send, 431, {"error": f"request headers are {size} bytes; the limit "
                                               f"is {self.max_header_bytes}",
                                      "field": "headers", "reason": "too large"})
            return
        send = _json_not_found(scope, send)
        if not is_inference(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            self._refused(503)
            await _answer(send, 503, {"error": f"overloaded: {self.in_flight} requests in "
                                               "flight in this worker; retry shortly",
                                      "reason": "overloaded"}, [(b"retry-after", b"1")])
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            self._refused(413)  # refused before a byte of the body is read
            await _answer(send, 413, {"error": f"invalid body: {declared} bytes; the limit is "
                                               f"{self.max_body_bytes}", "field": "body",
                                      "reason": "too large"})
            return
        # a body of unknown length may grow to the limit: it is charged the limit
        charge = declared if declared is not None else self.max_body_bytes
        if self.in_flight and self.inflight_bytes + charge > self.max_inflight_body_bytes:
            self._refused(503)
            await _answer(send, 503, {"error": f"overloaded: {self.inflight_bytes} bytes of "
                                               "request bodies in flight in this worker; "
                                               "retry shortly", "reason": "overloaded"},
                          [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        self.inflight_bytes += charge
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.inflight_bytes -= charge

    def _refused(self, status: int) -> None:
        if self.on_refuse is not None:
            try:
                self.on_refuse(status)
            except Exception:  # metrics must never break admission
                pass

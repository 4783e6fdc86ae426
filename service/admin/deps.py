"""What every admin router shares: the worker context, the bearer-token dependency (which
audits a denial and refuses unknown query parameters), the audit row of a request, JSON
bodies, If-Match, the actor of a change, and the annotated path parameters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control.deployments import Actor
from models.errors import InvalidInput, StaleRevision, VigilError
from models.registry import NAME_PATTERN
from service.auth import Principal
from service.context import WorkerContext, current_context
from service.errors import PayloadTooLarge, PreconditionRequired
from service.front import request_id
from store import AuditRecord, Transaction

bearer = HTTPBearer(auto_error=False, description="A Vigil token; roles: client < feedback "
                    "< viewer < operator < admin.")
NAME = NAME_PATTERN
ModelName = Annotated[str, Path(pattern=NAME, description="model name")]
VersionName = Annotated[str, Path(pattern=NAME, description="version")]
AUTH_ERRORS = (401, 403)
IfMatch = Annotated[str | None, Header(pattern=r'^\s*(W/)?"?[0-9]{1,18}"?\s*$',
                                       description="the deployment's revision (its ETag)")]


def ctx_of(request: Request) -> WorkerContext:
    """The context the app was built with (tests), else this worker's (BentoML builds it
    after the apps are mounted)."""
    ctx: WorkerContext | None = request.app.state.ctx
    return ctx if ctx is not None else current_context()


def actor_of(request: Request, principal: Principal) -> Actor:
    """Who acts, as the audit row names them: the token's name and role, and the request's
    id (the client's ``X-Request-ID`` when it gave a safe one)."""
    return Actor(principal.name, principal.role, request_id(request.headers))


def require(role: str, action: str) -> Callable[..., Any]:
    """A dependency: the caller's principal, or 401/403 after auditing the denial. Once the
    caller is known, a query parameter the route does not declare is a 422 naming it (the
    OpenAPI document lists every parameter a route reads)."""

    async def dependency(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        ctx = ctx_of(request)
        header = request.headers.get("authorization")
        try:
            principal = ctx.auth.require(header, role)
        except VigilError as exc:
            who = ctx.auth.identify(header)
            await asyncio.to_thread(ctx.audit.write, AuditRecord(
                actor=who.name if who else "anonymous", role=who.role if who else None,
                action=action, target=request.url.path, outcome="denied",
                request_id=request_id(request.headers), detail=exc.message))
            raise
        refuse_unknown_query(request)
        return principal

    return dependency


def refuse_unknown_query(request: Request) -> None:
    """422 naming the first query parameter the matched route does not declare."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = query_names(dependant)
    for name in request.query_params:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise InvalidInput(name, f"is not a query parameter of this route (it takes: "
                                     f"{listed})")


def query_names(dependant: Any) -> set[str]:
    """The query parameters a FastAPI route (its dependencies included) declares."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return names


def audit(ctx: WorkerContext, principal: Principal, request: Request, action: str,
          target: str, outcome: str = "ok", *, before: Any = None, after: Any = None,
          detail: str | None = None, tx: Transaction | None = None) -> None:
    """The audit row of an admin request (inside ``tx`` when given)."""
    ctx.audit.write(AuditRecord(actor=principal.name, role=principal.role, action=action,
                                target=target, outcome=outcome, before=before, after=after,
                                request_id=request_id(request.headers), detail=detail),
                    tx)


async def json_body(request: Request, what: str, limit: int = 64 * 1024) -> Any:
    """An admin body as JSON whatever its Content-Type (``curl -d`` labels JSON as a form):
    413 above ``limit`` bytes, 422 naming ``body`` when it does not parse."""
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge("body", f"{what} is at most {limit // 1024} KiB")
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})") from None


def expected_revision(if_match: str | None, required: bool) -> int | None:
    """The revision an ``If-Match`` header names; 428 when required and absent."""
    if if_match is None:
        if required:
            raise PreconditionRequired("If-Match", "missing", message=(
                "If-Match with the deployment's revision is required"))
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise InvalidInput("If-Match", "must be the deployment's revision number")
    return int(value)


def changed(exc: StaleRevision) -> StaleRevision:
    """A compare-and-set that lost to another writer, as the operator reads it: 412, try again."""
    return StaleRevision(exc.expected, exc.current,
                         message="the deployment changed meanwhile; try again")


@contextmanager
def changed_meanwhile() -> Iterator[None]:
    """``changed`` for whatever the block raises."""
    try:
        yield
    except StaleRevision as exc:
        raise changed(exc) from None

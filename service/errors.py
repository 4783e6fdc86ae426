"""Every error a client can see, each with its HTTP status, rendered in one envelope.

    VigilError (500)
    ├── InvalidInput (422)          a field of the request is wrong: names the field and why
    │   └── IncompatibleVersion     a canary/shadow whose schema differs from the champion's
    ├── InvalidItems (422)          several items of a batch are wrong: lists them all
    ├── PayloadTooLarge (413)       body bytes or rows over the configured limit
    ├── HeadersTooLarge (431)
    ├── NotFound (404)
    │   ├── ModelNotFound
    │   └── VersionNotFound
    ├── Conflict (409)              e.g. other bytes under an existing version
    ├── PreconditionFailed (412)    stale ``If-Match`` revision
    ├── PreconditionRequired (428)  a deployment change without ``If-Match``
    ├── Unauthorized (401)          missing or unknown bearer token
    ├── Forbidden (403)             role too low
    └── Unavailable (503)           overload or not ready, with ``Retry-After``

The envelope (docs/architecture.md, Contracts) is ``{"error": msg, "field": ..., "reason":
...}``; ``error`` alone is what the Open Inference Protocol requires, the rest is present
when known.
"""

from __future__ import annotations

from typing import Any


class VigilError(Exception):
    status = 500

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class InvalidInput(VigilError):
    status = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}", field=field, reason=reason)


class IncompatibleVersion(InvalidInput):
    pass


class InvalidItems(VigilError):
    """Several fields are wrong at once (a feedback batch): the envelope names the first and
    lists them all under ``errors``."""

    status = 422

    def __init__(self, problems: list[tuple[str, str]], total: int) -> None:
        field, reason = problems[0]
        what = f"{len(problems)} problem(s) in {total} item(s); nothing was accepted" \
            if total > 1 else f"invalid {field}: {reason}"
        super().__init__(what, field=field, reason=reason)
        self.problems = problems

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        body["errors"] = [{"field": f, "reason": r} for f, r in self.problems]
        return body


class PayloadTooLarge(VigilError):
    status = 413

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} too large: {reason}", field=field, reason=reason)


class HeadersTooLarge(VigilError):
    status = 431


class NotFound(VigilError):
    status = 404


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found", field="model", reason="unknown model")


class VersionNotFound(NotFound):
    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"version '{version}' of model '{model}' not found",
                         field="version", reason="unknown version")


class Conflict(VigilError):
    status = 409


class PreconditionFailed(VigilError):
    status = 412


class PreconditionRequired(VigilError):
    status = 428


class Unauthorized(VigilError):
    status = 401

    def __init__(self, present: bool = False) -> None:
        """``present``: a credential was sent but is not a known bearer token. RFC 6750 §3:
        no error code for a request without one, ``invalid_token`` for a bad one."""
        if present:
            super().__init__("invalid bearer token: not a token this server knows",
                             field="authorization", reason="unknown token",
                             headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        else:
            super().__init__("missing bearer token: send Authorization: Bearer <token>",
                             field="authorization", reason="missing",
                             headers={"WWW-Authenticate": "Bearer"})


class Forbidden(VigilError):
    status = 403


class Unavailable(VigilError):
    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})

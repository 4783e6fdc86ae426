"""Every error Vigil raises on purpose, in one tree. Each carries ``field`` (what is wrong: a
request field, a card key, a header; None when nothing in particular) and ``reason`` (why), and
composes its own message from them. Nothing here knows HTTP: ``service.httperrors`` is the one
module that maps a class to a status and renders the envelope ``{error, field, reason}``.

    VigilError                       the root; on its own, an unexpected failure
    ├── InvalidInput                 a field of a request, card or document is wrong
    │   ├── CardInvalid              the card breaks its JSON Schema or disagrees with the ONNX
    │   ├── InputInvalid             prediction rows that do not fit the input schema
    │   ├── DeploymentInvalid        a deployment document or patch that cannot be
    │   ├── IncompatibleVersion      a canary/shadow whose schema differs from the champion's
    │   └── InvalidItems             several items of a batch are wrong: lists them all
    ├── ArtifactInvalid              the ONNX (or the reference data) cannot be loaded or run
    ├── NotFound
    │   ├── UnknownModel             no such model or version in the registry
    │   │   ├── ModelNotFound        ... named by the request
    │   │   └── VersionNotFound
    │   ├── DeploymentNotFound       the model has no deployment
    │   └── RolloutNotFound          the model has no rollout
    ├── Conflict
    │   ├── VersionConflict          other bytes under an existing version
    │   └── StateConflict            the thing is not in a state that allows this
    ├── StaleRevision                a compare-and-set lost: the deployment moved meanwhile
    ├── InferenceFailed              the model raised on this input
    └── Unavailable                  overloaded, draining or not ready; retry after a while
        └── ArtifactUnavailable      a version's shared copy cannot be fetched to this replica

The HTTP-only leaves (Unauthorized, Forbidden, PayloadTooLarge, HeadersTooLarge,
PreconditionRequired) live in ``service.errors`` under the same root.
"""

from __future__ import annotations


class VigilError(Exception):
    """``message`` is composed from ``field`` and ``reason``; a leaf whose sentence says more
    than "field: reason" passes its own."""

    def __init__(self, field: str | None = None, reason: str | None = None, *,
                 message: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.message = message if message is not None else self.compose()
        super().__init__(self.message)

    def compose(self) -> str:
        if self.field is not None and self.reason is not None:
            return f"{self.field}: {self.reason}"
        return self.reason or self.field or type(self).__name__


# ----------------------------------------------------------------------------- 422


class InvalidInput(VigilError):
    def compose(self) -> str:
        return f"invalid {self.field}: {self.reason}"


class CardInvalid(InvalidInput):
    pass


class InputInvalid(InvalidInput):
    """A prediction request's rows do not fit the card's input schema."""


class DeploymentInvalid(InvalidInput):
    pass


class IncompatibleVersion(InvalidInput):
    pass


class InvalidItems(InvalidInput):
    """Several fields are wrong at once (a feedback batch): names the first and keeps them all
    in ``problems``."""

    def __init__(self, problems: list[tuple[str, str]], total: int) -> None:
        field, reason = problems[0]
        message = (f"{len(problems)} problem(s) in {total} item(s); nothing was accepted"
                   if total > 1 else None)
        super().__init__(field, reason, message=message)
        self.problems = problems
        self.total = total


class ArtifactInvalid(VigilError):
    def compose(self) -> str:
        return f"invalid {self.field}: {self.reason}"


# ----------------------------------------------------------------------------- 404


class NotFound(VigilError):
    pass


class UnknownModel(NotFound):
    """``field`` is "model" or "version", ``reason`` "not found"; the message names it."""


class ModelNotFound(UnknownModel):
    def __init__(self, model: str) -> None:
        super().__init__("model", "unknown model", message=f"model '{model}' not found")
        self.model = model


class VersionNotFound(UnknownModel):
    def __init__(self, model: str, version: str) -> None:
        super().__init__("version", "unknown version",
                         message=f"version '{version}' of model '{model}' not found")
        self.model = model
        self.version = version


class DeploymentNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__("model", "not deployed", message=f"no deployment for model '{model}'")
        self.model = model


class RolloutNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__("model", "no rollout", message=f"no rollout for model '{model}'")
        self.model = model


# ----------------------------------------------------------------------------- 409, 412


class Conflict(VigilError):
    pass


class VersionConflict(Conflict):
    pass


class StateConflict(Conflict):
    """E.g. promote with no canary, a rollout already running, pause a paused rollout."""


class StaleRevision(VigilError):
    """A write expected ``expected`` and found ``current``; the caller re-reads and retries."""

    def __init__(self, expected: int, current: int, *, message: str | None = None) -> None:
        self.expected = expected
        self.current = current
        super().__init__("If-Match", "stale", message=message or (
            f"revision {expected} is stale; the deployment is at {current}"))


# ----------------------------------------------------------------------------- 5xx


class InferenceFailed(VigilError):
    """The model raised on this input (logged with its traceback; the client sees the type)."""

    def __init__(self, model: str, version: str, cause: BaseException) -> None:
        super().__init__(None, type(cause).__name__, message=(
            f"model '{model}' version '{version}' failed on this input"))


class Unavailable(VigilError):
    """Try again in ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message=message)
        self.retry_after = retry_after


class ArtifactUnavailable(Unavailable):
    """A version this replica must serve cannot be fetched from the shared store: no row, a
    part whose SHA-256 differs, or the store unreachable. Retried on a later poll."""

    def __init__(self, model: str, version: str, reason: str) -> None:
        super().__init__(f"version '{version}' of '{model}' cannot be fetched: {reason}",
                         retry_after=5)
        self.field = "version"
        self.reason = reason
        self.model = model
        self.version = version

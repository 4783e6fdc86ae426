"""Errors raised by the model layer; the service maps each kind to an HTTP status.

    ModelError
    ├── CardInvalid         the card breaks its JSON Schema or disagrees with the ONNX
    ├── ArtifactInvalid     the ONNX (or reference data) cannot be loaded or run
    ├── VersionConflict     other bytes under an existing version
    ├── UnknownModel        no such model or version in the store
    ├── InputInvalid        request rows that do not fit the input schema
    ├── IncompatibleVersion a version a deployment names cannot serve beside its champion
    └── StateConflict       the operation does not fit the current state (promote with no
                            canary, a rollout already running, pause a paused rollout)
"""

from __future__ import annotations


class ModelError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CardInvalid(ModelError):
    pass


class ArtifactInvalid(ModelError):
    pass


class VersionConflict(ModelError):
    pass


class UnknownModel(ModelError):
    pass


class InputInvalid(ModelError):
    """A prediction request's rows do not fit the card's input schema."""


class IncompatibleVersion(ModelError):
    """A version a deployment would name cannot serve beside its champion: it is not
    registered, or its task, classes or input schema differ. ``field`` says where the
    deployment names it (``canary.version``, ``shadows[0].version``, ``candidate``)."""


class StateConflict(ModelError):
    """The request is well formed but the current state does not allow it: promote with no
    canary, roll back with no previous champion, start a rollout while one runs, pause a
    rollout that is not running."""

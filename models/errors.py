"""Errors raised by the model layer; the service maps each kind to an HTTP status.

    ModelError
    ├── CardInvalid         the card breaks its JSON Schema or disagrees with the ONNX
    ├── ArtifactInvalid     the ONNX (or reference data) cannot be loaded or run
    ├── VersionConflict     other bytes under an existing version
    ├── UnknownModel        no such model or version in the store
    └── InputInvalid        request rows that do not fit the input schema
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

"""What a model is: cards, the registry over the BentoML model store, the ONNX runtime and
the reference profile. Imports neither ``service`` nor ``monitoring``."""

from models.card import ModelCard, parse_card
from models.registry import ModelVersion, Registry
from models.runtime import ModelRuntime

__all__ = ["ModelCard", "ModelRuntime", "ModelVersion", "Registry", "parse_card"]

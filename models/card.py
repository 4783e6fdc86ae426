"""The model card: what a version is, validated against ``card.schema.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from models.errors import CardInvalid

SCHEMA_PATH = Path(__file__).with_name("card.schema.json")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # float | int | bool | category
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    pii: str = "keep"  # keep | hash | drop: how the prediction log writes it


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    features: tuple[Feature, ...]
    onnx_input: str
    onnx_layout: str
    onnx_dtype: str
    class_labels: tuple[str, ...]
    outputs: dict[str, str]  # role -> ONNX output name
    raw: dict[str, Any] = field(compare=False, repr=False, hash=False)

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.raw.get("lineage", {}))

    def signature(self) -> tuple[Any, ...]:
        """What must match for two versions to share traffic: inputs, task, class labels."""
        return (self.task, self.class_labels,
                tuple((f.name, f.dtype, f.categories) for f in self.features))

    def incompatibility(self, other: ModelCard) -> str | None:
        """Why ``other`` cannot serve beside this card, or None when it can."""
        if other.task != self.task:
            return f"task {other.task!r} differs from the champion's {self.task!r}"
        if other.class_labels != self.class_labels:
            return (f"class_labels {list(other.class_labels)} differ from the champion's "
                    f"{list(self.class_labels)}")
        mine = [(f.name, f.dtype, f.categories) for f in self.features]
        theirs = [(f.name, f.dtype, f.categories) for f in other.features]
        if mine != theirs:
            missing = sorted(set(self.feature_names) - set(other.feature_names))
            extra = sorted(set(other.feature_names) - set(self.feature_names))
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"extra {extra}")
            return "input schema differs from the champion's" + (
                f" ({'; '.join(detail)})" if detail else " (feature order or types)")
        return None


PII_ORDER = {"keep": 0, "hash": 1, "drop": 2}


def strictest_pii(cards: list[ModelCard]) -> tuple[Feature, ...]:
    """The first card's features, each with the strictest personal-data mark any of
    ``cards`` gives it (drop > hash > keep): what a model's log writes when several versions
    serve it, so no version's personal data is written for another's requests.

    >>> a = ModelCard("m", "1", "regression", (Feature("x", "float"),), "X", "matrix",
    ...               "float32", (), {"value": "v"}, {})
    >>> b = ModelCard("m", "2", "regression", (Feature("x", "float", pii="hash"),), "X",
    ...               "matrix", "float32", (), {"value": "v"}, {})
    >>> [f.pii for f in strictest_pii([a, b])]
    ['hash']
    """
    marks: dict[str, str] = {}
    for card in cards:
        for f in card.features:
            if PII_ORDER[f.pii] > PII_ORDER[marks.get(f.name, "keep")]:
                marks[f.name] = f.pii
    first = cards[0].features
    if all(marks.get(f.name, "keep") == f.pii for f in first):
        return first
    return tuple(replace(f, pii=marks.get(f.name, "keep")) for f in first)


def parse_card(data: Any) -> ModelCard:
    """Validate ``data`` against the card schema and build a ModelCard.

    >>> card = parse_card({"name": "m", "version": "1", "task": "regression",
    ...     "inputs": [{"name": "x", "dtype": "float"}],
    ...     "onnx_input": {"name": "X", "layout": "matrix"},
    ...     "outputs": [{"name": "variable", "role": "value"}],
    ...     "lineage": {"dataset_sha256": "0" * 64, "code_commit": "abc"}})
    >>> card.feature_names, card.outputs
    (['x'], {'value': 'variable'})
    """
    if not isinstance(data, dict):
        raise CardInvalid("card", "must be a JSON object")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "card"
        raise CardInvalid(f"card.{where}" if where != "card" else where, err.message)
    features = tuple(
        Feature(name=f["name"], dtype=f["dtype"], min=f.get("min"), max=f.get("max"),
                categories=tuple(f["categories"]) if "categories" in f else None,
                nullable=bool(f.get("nullable", False)), pii=f.get("pii", "keep"))
        for f in data["inputs"]
    )
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise CardInvalid("card.inputs", "feature names must be unique")
    for f in features:
        if f.dtype == "category" and not f.categories:
            raise CardInvalid(f"card.inputs.{f.name}", "a category feature needs categories")
    outputs = {o["role"]: o["name"] for o in data["outputs"]}
    classifier = data["task"] in ("binary", "multiclass")
    if classifier and not {"label", "probabilities"} <= outputs.keys():
        raise CardInvalid("card.outputs", "a classifier needs 'label' and 'probabilities' outputs")
    if not classifier and "value" not in outputs:
        raise CardInvalid("card.outputs", "a regressor needs a 'value' output")
    labels = tuple(data.get("class_labels", ()))
    if data["task"] == "binary" and len(labels) != 2:
        raise CardInvalid("card.class_labels", "a binary classifier has exactly 2 class labels")
    return ModelCard(
        name=data["name"], version=data["version"], task=data["task"], features=features,
        onnx_input=data["onnx_input"]["name"], onnx_layout=data["onnx_input"]["layout"],
        onnx_dtype=data["onnx_input"].get("dtype", "float32"), class_labels=labels,
        outputs=outputs, raw=data,
    )

"""Decode request rows (named records or positional arrays) into the model's input matrix.

Pure: takes the card and plain JSON values, returns a float matrix or raises ``InputInvalid``
naming the exact field (``inputs[3].mean radius``) and the reason.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from models.card import Feature, ModelCard
from models.errors import InputInvalid

_NUMBER = (int, float)


def _encode(value: Any, feature: Feature, where: str) -> float:
    if value is None:
        if feature.nullable:
            return math.nan
        raise InputInvalid(where, "is null but the feature is not nullable")
    kind = feature.dtype
    if kind == "category":
        if not isinstance(value, str):
            raise InputInvalid(where, f"expected a category string, got {type(value).__name__}")
        cats = feature.categories or ()
        try:
            return float(cats.index(value))
        except ValueError:
            # An unseen category is drift, not a client error: it encodes as NaN when the
            # feature allows nulls and is refused otherwise.
            if feature.nullable:
                return math.nan
            raise InputInvalid(where, f"unknown category {value!r}") from None
    if kind == "bool":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        raise InputInvalid(where, f"expected a boolean, got {type(value).__name__}")
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise InputInvalid(where, f"expected a number, got {type(value).__name__}")
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise InputInvalid(where, "expected an integer")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double's range
        raise InputInvalid(where, "is out of range for a number") from None
    if not math.isfinite(number):
        raise InputInvalid(where, "must be a finite number")
    return number


def decode_records(card: ModelCard, records: Any, field: str = "inputs") -> np.ndarray:
    """Named records ``[{"feature": value, ...}, ...]`` → float64 matrix in card order."""
    if not isinstance(records, list):
        raise InputInvalid(field, "must be a list of objects, one per row")
    if not records:
        raise InputInvalid(field, "must hold at least one row")
    features = card.features
    if all(type(r) is dict and len(r) == len(features) for r in records):
        try:
            fast = _numeric_rows(features, list(map(_values_in_order(
                tuple(f.name for f in features)), records)))
        except KeyError:  # an unknown or missing feature: the checked path names it
            fast = None
        if fast is not None:
            return fast
    names = {f.name for f in features}
    out = np.empty((len(records), len(features)), dtype=np.float64)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputInvalid(f"{field}[{i}]", "must be an object of feature values")
        if len(rec) != len(features) or not names.issuperset(rec):
            unknown = sorted(k for k in rec if k not in names)
            if unknown:
                raise InputInvalid(f"{field}[{i}].{unknown[0]}", "unknown feature")
        row = out[i]
        for j, feat in enumerate(features):
            if feat.name in rec:
                row[j] = _encode(rec[feat.name], feat, f"{field}[{i}].{feat.name}")
            elif feat.nullable:
                row[j] = math.nan
            else:
                raise InputInvalid(f"{field}[{i}].{feat.name}", "missing required feature")
    return out


@functools.lru_cache(maxsize=64)
def _values_in_order(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A record's values in the card's order as a tuple, picked in C (``itemgetter``): 0.48 µs
    a 30-feature record against 1.25 µs for a comprehension over the features (600 records)."""
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    return operator.itemgetter(*names)


def _numeric_rows(features: tuple[Feature, ...] | list[Feature], rows: list[Any]
                  ) -> np.ndarray | None:
    """The fast path for a card of numbers only: rows that are all lists of the right width
    holding only ints and floats become a matrix in C. None sends anything else (a string, a
    bool, a null, a fraction in an int feature, a huge integer) to the checked path below,
    which names the field and the reason."""
    width = len(features)
    if any(f.dtype in ("category", "bool") for f in features):
        return None
    if not all((type(r) is list or type(r) is tuple) and len(r) == width for r in rows):
        return None
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
        return None
    try:
        out = np.array(rows, dtype=np.float64)
    except (OverflowError, ValueError):
        return None
    if not np.isfinite(out).all():
        return None
    ints = [j for j, f in enumerate(features) if f.dtype == "int"]
    if ints and not np.array_equal(out[:, ints], np.floor(out[:, ints])):
        return None
    return out


def decode_rows(card: ModelCard, rows: Any, field: str = "instances") -> np.ndarray:
    """Positional rows ``[[v1, v2, ...], ...]`` in the card's feature order → float64 matrix."""
    if not isinstance(rows, list):
        raise InputInvalid(field, "must be a list of rows")
    if not rows:
        raise InputInvalid(field, "must hold at least one row")
    features = card.features
    fast = _numeric_rows(features, rows)
    if fast is not None:
        return fast
    width = len(features)
    out = np.empty((len(rows), width), dtype=np.float64)
    for i, row_in in enumerate(rows):
        if not isinstance(row_in, list):
            raise InputInvalid(f"{field}[{i}]", f"must be a list of {width} values")
        if len(row_in) != width:
            raise InputInvalid(f"{field}[{i}]", f"has {len(row_in)} values, expected {width}")
        row = out[i]
        for j, feat in enumerate(features):
            row[j] = _encode(row_in[j], feat, f"{field}[{i}][{j}] ({feat.name})")
    return out


def decode_matrix(card: ModelCard, values: np.ndarray, field: str) -> np.ndarray:
    """Validate an already-numeric matrix (e.g. an OIP tensor) against the card."""
    if values.ndim != 2 or values.shape[1] != len(card.features):
        raise InputInvalid(field, f"shape {list(values.shape)} is not [n, {len(card.features)}]")
    matrix = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(matrix)
    if bad.any():
        nullable = np.array([f.nullable for f in card.features])
        rows, cols = np.nonzero(bad & ~nullable[None, :])
        if len(rows):
            name = card.features[int(cols[0])].name
            raise InputInvalid(f"{field}[{int(rows[0])}].{name}", "must be a finite number")
    return matrix

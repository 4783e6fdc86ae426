"""Hostile values through every decoder: only a 4xx-mapped error or a valid matrix comes out —
never another exception, never a NaN or infinity where the card does not allow it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from models.errors import InputInvalid, VigilError
from models.inputs import decode_records, decode_rows
from models.registry import Registry
from monitoring.quality.feedback import FeedbackInvalid, validate_feedback
from service.httperrors import status_of
from service.inference import parse_json
from service.tensors import parse_infer

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                    st.just(""), st.just("1e308"), st.just("NaN"))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=20)


def assert_clean(matrix: np.ndarray) -> None:
    assert matrix.dtype == np.float64 and matrix.ndim == 2
    assert np.isfinite(matrix).all()  # the demo cards allow no nulls


@given(values)
def test_records_decoder(registry: Registry, body: Any) -> None:
    card = registry.get("diabetes", "v1").card
    try:
        assert_clean(decode_records(card, body))
    except InputInvalid as exc:
        assert exc.field and exc.reason


@given(st.lists(st.lists(scalars, min_size=10, max_size=10), max_size=5) | values)
def test_rows_decoder(registry: Registry, body: Any) -> None:
    card = registry.get("diabetes", "v1").card
    try:
        assert_clean(decode_rows(card, body))
    except InputInvalid as exc:
        assert exc.field and exc.reason


@given(st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["X", "age", "bmi", "nope", ""]),
    "shape": st.lists(st.integers(-2, 12), max_size=3),
    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "FP16", "X"]),
    "data": values}), max_size=3)}, optional={"id": scalars, "outputs": values,
                                               "parameters": values}))
def test_oip_decoder(registry: Registry, body: dict[str, Any]) -> None:
    card = registry.get("diabetes", "v1").card
    try:
        req = parse_infer(card, body, b"", 1000)
        assert_clean(req.matrix)
    except VigilError as exc:
        assert 400 <= status_of(exc) < 500 and exc.field


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_json_parser(raw: bytes) -> None:
    try:
        parse_json(raw, 10_000)
    except VigilError as exc:
        assert status_of(exc) in (413, 422)


@given(values)
def test_feedback_validator(registry: Registry, body: Any) -> None:
    card = registry.get("breast_cancer", "v1").card
    if not isinstance(body, dict):
        body = {"items": body}
    try:
        for item in validate_feedback(card, body, 100):
            assert item["label"] in card.class_labels
    except FeedbackInvalid as exc:
        assert exc.problems and all(f and r for f, r in exc.problems)


def test_deep_nesting_and_huge_numbers_are_refused(registry: Registry) -> None:
    card = registry.get("diabetes", "v1").card
    deep: Any = 1.0
    for _ in range(500):
        deep = [deep]
    for body in ([[1e309] * 10], [[math.nan] * 10], [deep], [[10**400] * 10]):
        try:
            assert_clean(decode_rows(card, body))
        except InputInvalid:
            pass


def test_an_empty_field_name_is_still_named(registry: Registry) -> None:
    import pytest

    card = registry.get("diabetes", "v1").card
    with pytest.raises(VigilError) as info:
        parse_infer(card, {"inputs": [], "": 1}, b"", 10)
    assert info.value.field == "''"
    with pytest.raises(FeedbackInvalid) as fb:
        validate_feedback(registry.get("breast_cancer", "v1").card,
                          {"request_id": "r", "label": "benign", "": 1}, 10)
    assert fb.value.problems[0][0] == "''"

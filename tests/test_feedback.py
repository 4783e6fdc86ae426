"""Feedback bodies are validated against the model's task as a whole."""

from __future__ import annotations

import pytest

from models.registry import Registry
from monitoring.quality.feedback import FeedbackInvalid, validate_feedback


def test_a_classifier_label_is_a_class_or_its_index(registry: Registry) -> None:
    card = registry.get("breast_cancer", "v1").card
    items = validate_feedback(card, {"model": "breast_cancer", "items": [
        {"request_id": "a", "label": "benign"}, {"request_id": "b", "label": 0, "row": 2}]}, 10)
    assert items == [{"request_id": "a", "row": 0, "label": "benign"},
                     {"request_id": "b", "row": 2, "label": "malignant"}]
    single = validate_feedback(card, {"model": "breast_cancer", "request_id": "c",
                                      "label": "malignant"}, 10)
    assert single == [{"request_id": "c", "row": 0, "label": "malignant"}]


def test_one_bad_item_refuses_the_batch_and_every_problem_is_named(registry: Registry) -> None:
    card = registry.get("breast_cancer", "v1").card
    with pytest.raises(FeedbackInvalid) as info:
        validate_feedback(card, {"model": "breast_cancer", "items": [
            {"request_id": "ok", "label": "benign"},
            {"request_id": "x", "label": "cat"},
            {"label": "benign"},
            {"request_id": "y", "value": 1.0, "extra": 1},
            "nope"]}, 10)
    fields = [f for f, _ in info.value.problems]
    assert fields == ["items[1].label", "items[2].request_id", "items[3].extra",
                      "items[3].value", "items[3].label", "items[4]"]
    assert info.value.total == 5


def test_a_regressor_takes_a_finite_value(registry: Registry) -> None:
    card = registry.get("diabetes", "v1").card
    assert validate_feedback(card, {"model": "diabetes", "request_id": "a", "value": 151},
                             10) == [{"request_id": "a", "row": 0, "value": 151.0}]
    for bad in ({"request_id": "a", "value": "151"}, {"request_id": "a", "label": "x"},
                {"request_id": "a", "value": True}):
        with pytest.raises(FeedbackInvalid):
            validate_feedback(card, {"model": "diabetes", **bad}, 10)


def test_batch_limits(registry: Registry) -> None:
    card = registry.get("breast_cancer", "v1").card
    with pytest.raises(FeedbackInvalid, match="problem"):
        validate_feedback(card, {"model": "breast_cancer", "items": []}, 10)
    with pytest.raises(FeedbackInvalid) as info:
        validate_feedback(card, {"model": "breast_cancer", "items": [
            {"request_id": str(i), "label": 1} for i in range(11)]}, 10)
    assert info.value.problems == [("items", "11 items; the limit is 10")]

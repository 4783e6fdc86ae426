"""The OpenAPI operations Vigil writes itself say what the server enforces."""

from __future__ import annotations

from service.openapi import feedback_operation, predict_operation


def test_feedback_declares_the_bearer_scheme_when_a_token_is_required() -> None:
    assert feedback_operation(token_required=True)["security"] == [{"HTTPBearer": []}]
    assert "security" not in feedback_operation(token_required=False)
    assert "401" in feedback_operation()["responses"]


def test_predict_declares_it_only_when_inference_needs_a_token() -> None:
    assert "security" not in predict_operation(token_required=False)
    assert predict_operation(token_required=True)["security"] == [{"HTTPBearer": []}]

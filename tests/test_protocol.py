"""Decoding Open Inference Protocol tensors against a card, and encoding outputs (pure)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from models.errors import InvalidInput
from models.registry import Registry
from service.httperrors import status_of
from service.tensors import output_tensors, parse_infer, split_body


@pytest.fixture(scope="module")
def card(registry: Registry) -> Any:
    return registry.get("breast_cancer", "v1").card


def rows(n: int = 2) -> np.ndarray:
    return np.arange(n * 30, dtype=np.float64).reshape(n, 30) / 7.0


def test_one_matrix_tensor_nested_or_flat(card: Any) -> None:
    x = rows()
    for data in (x.tolist(), x.reshape(-1).tolist()):
        req = parse_infer(card, {"inputs": [{"name": card.onnx_input, "shape": [2, 30],
                                             "datatype": "FP64", "data": data}]}, b"", 100)
        np.testing.assert_array_equal(req.matrix, x)


def test_one_tensor_per_feature_in_any_order(card: Any) -> None:
    x = rows(3)
    tensors = [{"name": name, "shape": [3, 1] if j % 2 else [3], "datatype": "FP32",
                "data": x[:, j].tolist()} for j, name in enumerate(card.feature_names)]
    req = parse_infer(card, {"inputs": tensors[::-1], "id": "q1",
                             "parameters": {"routing_key": "u1"}}, b"", 100)
    np.testing.assert_allclose(req.matrix, x.astype(np.float32), rtol=0, atol=0)
    assert (req.id, req.routing_key) == ("q1", "u1")


def test_binary_tensor_data_extension(card: Any) -> None:
    x = rows().astype(np.float32)
    head = (b'{"inputs": [{"name": "X", "shape": [2, 30], "datatype": "FP32", '
            b'"parameters": {"binary_data_size": 240}}]}')
    raw = head + x.tobytes()
    json_part, binary = split_body(raw, str(len(head)))
    import orjson

    req = parse_infer(card, orjson.loads(json_part), binary, 100)
    np.testing.assert_array_equal(req.matrix, x.astype(np.float64))


@pytest.mark.parametrize(("body", "field"), [
    ({"inputs": [{"name": "nope", "shape": [1, 30], "datatype": "FP32",
                  "data": [0.0] * 30}]}, "inputs[0].name"),
    ({"inputs": [{"name": "X", "shape": [1, 29], "datatype": "FP32",
                  "data": [0.0] * 29}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                  "data": [0.0] * 29}]}, "inputs[0].data"),
    ({"inputs": [{"name": "X", "shape": [2, 30], "datatype": "FP32",
                  "data": [[0.0] * 20] * 3}]}, "inputs[0].data"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP33",
                  "data": [0.0] * 30}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "BYTES",
                  "data": ["a"] * 30}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "INT32",
                  "data": [0.5] * 30}]}, "inputs[0].data"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                  "data": ["1"] * 30}]}, "inputs[0].data"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                  "data": [0.0] * 30}], "outputs": [{"name": "logits"}]}, "outputs[0].name"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "mean radius", "shape": [2], "datatype": "FP32",
                  "data": [1.0, 2.0]}]}, "inputs"),  # the other 29 features are missing
    ({"inputs": [{"name": "X", "shape": [1001, 30], "datatype": "FP32",
                  "data": [0.0] * 30030}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}],
      "extra": 1}, "extra"),
])
def test_client_mistakes_name_the_field(card: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_infer(card, body, b"", 1000)
    assert info.value.field == field and status_of(info.value) == 422


def test_rows_of_different_lengths_across_feature_tensors(card: Any) -> None:
    tensors = [{"name": n, "shape": [2 if j else 3], "datatype": "FP64",
                "data": [1.0] * (2 if j else 3)} for j, n in enumerate(card.feature_names)]
    with pytest.raises(InvalidInput, match="rows"):
        parse_infer(card, {"inputs": tensors}, b"", 100)


def test_binary_sizes_must_add_up(card: Any) -> None:
    body = {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                        "parameters": {"binary_data_size": 120}}]}
    with pytest.raises(InvalidInput, match="binary"):
        parse_infer(card, body, b"\0" * 100, 100)
    with pytest.raises(InvalidInput, match="not claimed"):
        parse_infer(card, body, b"\0" * 124, 100)
    with pytest.raises(InvalidInput):
        split_body(b"{}", "17")


def test_bytes_elements_decode(registry: Registry) -> None:
    from service.tensors import _bytes_elements

    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"red", b"", b"blue"))
    assert _bytes_elements(raw, "x") == ["red", "", "blue"]


def test_outputs_follow_the_card(card: Any) -> None:
    preds = [{"label": "benign", "label_index": 1,
              "probabilities": {"malignant": 0.25, "benign": 0.75}}]
    tensors = output_tensors(card, preds)
    assert tensors["label"][0:2] == ("INT64", [1])
    assert tensors["probabilities"][1] == [1, 2]
    np.testing.assert_array_equal(tensors["probabilities"][2], [[0.25, 0.75]])

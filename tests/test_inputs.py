from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.card import parse_card
from models.errors import InputInvalid
from models.inputs import decode_matrix, decode_records, decode_rows

CARD = parse_card({
    "name": "m", "version": "1", "task": "regression",
    "inputs": [{"name": "x", "dtype": "float"}, {"name": "n", "dtype": "int"},
               {"name": "flag", "dtype": "bool"},
               {"name": "color", "dtype": "category", "categories": ["red", "blue"]},
               {"name": "opt", "dtype": "float", "nullable": True}],
    "onnx_input": {"name": "X", "layout": "matrix"},
    "outputs": [{"name": "y", "role": "value"}],
    "lineage": {"dataset_sha256": "0" * 64, "code_commit": "abc"},
})
GOOD = {"x": 1.5, "n": 3, "flag": True, "color": "blue", "opt": None}


def test_records_decode_in_card_order() -> None:
    m = decode_records(CARD, [GOOD, {**GOOD, "opt": 2.0, "color": "red", "flag": False}])
    assert m.shape == (2, 5)
    assert m[0, :4].tolist() == [1.5, 3.0, 1.0, 1.0] and math.isnan(m[0, 4])
    assert m[1].tolist() == [1.5, 3.0, 0.0, 0.0, 2.0]


def test_rows_decode_like_records() -> None:
    rows = decode_rows(CARD, [[1.5, 3, True, "blue", None]])
    recs = decode_records(CARD, [GOOD])
    assert np.array_equal(rows, recs, equal_nan=True)


@pytest.mark.parametrize("record,field,reason", [
    ({**GOOD, "x": "1.5"}, "inputs[0].x", "expected a number"),
    ({**GOOD, "x": True}, "inputs[0].x", "expected a number"),
    ({**GOOD, "n": 1.5}, "inputs[0].n", "integer"),
    ({**GOOD, "flag": 1}, "inputs[0].flag", "boolean"),
    ({**GOOD, "color": "green"}, "inputs[0].color", "unknown category"),
    ({**GOOD, "x": None}, "inputs[0].x", "not nullable"),
    ({k: v for k, v in GOOD.items() if k != "n"}, "inputs[0].n", "missing"),
    ({**GOOD, "bogus": 1}, "inputs[0].bogus", "unknown feature"),
    ({**GOOD, "x": 1e400}, "inputs[0].x", "finite"),
])
def test_bad_records_name_the_field(record: dict, field: str, reason: str) -> None:
    with pytest.raises(InputInvalid) as err:
        decode_records(CARD, [record])
    assert err.value.field == field and reason in err.value.reason


def test_bad_shapes() -> None:
    with pytest.raises(InputInvalid, match="at least one row"):
        decode_records(CARD, [])
    with pytest.raises(InputInvalid, match="list"):
        decode_records(CARD, {"x": 1})
    with pytest.raises(InputInvalid) as err:
        decode_rows(CARD, [[1, 2]])
    assert err.value.field == "instances[0]" and "expected 5" in err.value.reason
    with pytest.raises(InputInvalid, match="shape"):
        decode_matrix(CARD, np.zeros((2, 3)), "x")
    with pytest.raises(InputInvalid, match="finite"):
        decode_matrix(CARD, np.array([[np.nan, 1, 1, 0, np.nan]]), "t")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=10)


@given(st.lists(st.dictionaries(st.sampled_from(list(GOOD) + ["zz", "é"]), json_values),
                max_size=4))
def test_hostile_records_either_decode_finite_or_raise_input_invalid(records: list) -> None:
    try:
        m = decode_records(CARD, records)
    except InputInvalid as exc:
        assert exc.field.startswith("inputs")
        return
    assert m.shape == (len(records), 5)
    assert np.isfinite(m[:, :4]).all()


def test_the_numeric_fast_path_equals_the_checked_path(registry: Any) -> None:
    """decode_rows and decode_records take a C fast path for all-number rows; it must give
    exactly what the per-value checked path gives, in card order (ints included)."""
    from models.inputs import _encode, decode_records, decode_rows

    card = registry.get("diabetes", "v1").card
    rng = np.random.default_rng(7)
    rows = [[int(v) if j % 3 == 0 else float(v) for j, v in enumerate(r)]
            for r in rng.normal(size=(50, len(card.features))).round(3) * 10]
    checked = np.array([[_encode(v, f, "x") for v, f in zip(r, card.features, strict=True)]
                        for r in rows])
    assert np.array_equal(decode_rows(card, rows), checked)
    records = [{f.name: v for f, v in reversed(list(zip(card.features, r, strict=True)))}
               for r in rows]  # keys in another order than the card's
    assert np.array_equal(decode_records(card, records), checked)


def test_a_one_feature_card_decodes_records_in_the_fast_path() -> None:
    """A card of one number: each record's value becomes a one-column row (the fast path's
    picker returns a tuple for one name as for many); a missing name is still named."""
    card = parse_card({**_card_doc(),
                       "inputs": [{"name": "x", "dtype": "float"}]})
    assert decode_records(card, [{"x": 1.5}, {"x": 2}]).tolist() == [[1.5], [2.0]]
    with pytest.raises(InputInvalid) as err:
        decode_records(card, [{"x": 1.5}, {"y": 2.0}])
    assert err.value.field == "inputs[1].y"


def _card_doc() -> dict[str, Any]:
    return {"name": "m", "version": "1", "task": "regression",
            "onnx_input": {"name": "X", "layout": "matrix"},
            "outputs": [{"name": "y", "role": "value"}],
            "lineage": {"dataset_sha256": "0" * 64, "code_commit": "abc"}}

from __future__ import annotations

import copy
import io

import pandas as pd
import pytest

from models.card import parse_card
from models.errors import ArtifactInvalid, CardInvalid, UnknownModel, VersionConflict
from models.registry import Registry
from tests.conftest import demo_files


def test_demo_versions_are_registered_with_lineage_and_profile(registry: Registry) -> None:
    assert registry.list()["breast_cancer"] == ["v1", "v2", "v3"]
    mv = registry.get("breast_cancer", "v2")
    lineage = mv.card.lineage
    assert len(lineage["dataset_sha256"]) == 64 and lineage["code_commit"]
    assert lineage["environment"]["libraries"]["scikit-learn"]
    profile = mv.profile
    radius = profile["features"]["mean radius"]
    ref = pd.read_csv(io.BytesIO(demo_files("breast_cancer", "v2")[2]))["mean radius"]
    assert radius["mean"] == pytest.approx(ref.mean())
    assert radius["std"] == pytest.approx(ref.std())
    assert sum(radius["bin_fractions"]) == pytest.approx(1.0)
    fractions = profile["predictions"]["class_fractions"]
    assert set(fractions) == {"malignant", "benign"}


def test_same_bytes_again_is_idempotent(registry: Registry) -> None:
    mv, created = registry.register(*demo_files("breast_cancer", "v1"))
    assert not created and mv.version == "v1"


def test_other_bytes_under_an_existing_version_conflict(registry: Registry) -> None:
    onnx, card, ref = demo_files("breast_cancer", "v2")
    card["version"] = "v1"
    card["description"] = "different"
    with pytest.raises(VersionConflict):
        registry.register(onnx, card, ref)


def test_a_corrupt_onnx_is_refused_with_the_reason(registry: Registry) -> None:
    _, card, ref = demo_files("breast_cancer", "v1")
    card["version"] = "corrupt"
    with pytest.raises(ArtifactInvalid, match="not a loadable ONNX"):
        registry.register(b"\x08\x01garbage", card, ref)
    with pytest.raises(UnknownModel):
        registry.get("breast_cancer", "corrupt")


def test_a_card_that_disagrees_with_the_onnx_is_refused(registry: Registry) -> None:
    onnx, card, ref = demo_files("breast_cancer", "v1")
    card = copy.deepcopy(card)
    card["version"] = "short"
    card["inputs"] = card["inputs"][:29]
    with pytest.raises(CardInvalid, match="29 features"):
        registry.register(onnx, card, ref)
    onnx2, card2, ref2 = demo_files("breast_cancer", "v1")
    card2["version"] = "badlabels"
    card2["task"] = "multiclass"
    card2["class_labels"] = ["a", "b", "c"]
    with pytest.raises(CardInvalid, match="3 labels"):
        registry.register(onnx2, card2, ref2)


@pytest.mark.parametrize("version", ["V1", "has space", "x" * 64, ""])
def test_names_bentoml_would_mangle_are_refused(registry: Registry, version: str) -> None:
    onnx, card, ref = demo_files("diabetes", "v1")
    card["version"] = version
    with pytest.raises(CardInvalid, match="a-z0-9"):
        registry.register(onnx, card, ref)


def test_reference_rows_missing_a_feature_are_refused(registry: Registry) -> None:
    onnx, card, ref = demo_files("diabetes", "v1")
    card["version"] = "missingcol"
    frame = pd.read_csv(io.BytesIO(ref)).drop(columns=["bmi"])
    with pytest.raises(ArtifactInvalid, match="bmi"):
        registry.register(onnx, card, frame.to_csv(index=False).encode())


def test_parquet_reference_is_accepted(registry: Registry) -> None:
    onnx, card, ref = demo_files("diabetes", "v1")
    card["version"] = "parquet"
    buf = io.BytesIO()
    pd.read_csv(io.BytesIO(ref)).to_parquet(buf)
    mv, created = registry.register(onnx, card, buf.getvalue())
    assert created and mv.profile["rows"] == len(pd.read_csv(io.BytesIO(ref)))


def test_predictions_match_onnx_order_and_card_labels(registry: Registry) -> None:
    runtime = registry.get("breast_cancer", "v1").load()
    rows = registry.get("breast_cancer", "v1").smoke_rows()[:5]
    preds = runtime.predict(rows)
    for p in preds:
        probs = p["probabilities"]
        assert list(probs) == ["malignant", "benign"]
        assert p["label"] == max(probs, key=probs.get)
        assert p["label_index"] == ["malignant", "benign"].index(p["label"])
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_card_schema_errors_name_the_field() -> None:
    _, card, _ = demo_files("diabetes", "v1")
    card["task"] = "clustering"
    with pytest.raises(CardInvalid) as err:
        parse_card(card)
    assert err.value.field == "card.task"
    _, card, _ = demo_files("breast_cancer", "v1")
    del card["class_labels"]
    with pytest.raises(CardInvalid, match="class_labels"):
        parse_card(card)


def test_incompatibility_is_explained() -> None:
    a = parse_card(demo_files("breast_cancer", "v1")[1])
    b = parse_card(demo_files("diabetes", "v1")[1])
    assert a.incompatibility(parse_card(demo_files("breast_cancer", "v2")[1])) is None
    assert "task" in (a.incompatibility(b) or "")
    c = demo_files("breast_cancer", "v2")[1]
    c["inputs"] = c["inputs"][1:] + [{"name": "extra", "dtype": "float"}]
    reason = a.incompatibility(parse_card(c)) or ""
    assert "missing ['mean radius']" in reason and "extra ['extra']" in reason

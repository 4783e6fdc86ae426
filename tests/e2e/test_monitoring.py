"""The prediction log, the Monitor and feedback against a real 2-worker ``bentoml serve``
(its own server: the counts here must not see other tests' traffic)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer

from monitoring.log.export import export_parquet
from monitoring.quality.scores import AUC_BINS
from tests.e2e.conftest import Server, keyed_predictions, start_server, stop_server

pytestmark = pytest.mark.e2e
N = 240
CLASSES = ["malignant", "benign"]  # the card's class_labels: label_index = sklearn's target


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-monitoring"))
    yield srv
    stop_server(proc)


def log_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of every segment (each must parse)."""
    out: list[dict[str, Any]] = []
    if not (data_dir / "log").is_dir():
        return out
    for path in sorted((data_dir / "log").iterdir()):
        data = path.read_bytes()
        complete = data[:data.rfind(b"\n") + 1]
        out += [orjson.loads(line) for line in complete.splitlines()]
    return out


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def stats(client: httpx.Client, srv: Server) -> dict[str, Any]:
    r = client.get("/admin/models/breast_cancer/stats", headers=srv.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_counts_logs_and_quality_match_exactly(server: Server) -> None:
    data = load_breast_cancer()
    rng = np.random.default_rng(11)
    picks = rng.choice(len(data.target), N, replace=True)

    answers = keyed_predictions(server.url, [
        dict(zip(data.feature_names, data.data[k].tolist(), strict=True)) for k in picks])
    by_variant = Counter((a["version"], a["variant"]) for a in answers)
    assert by_variant[("v2", "canary")] > 0  # the demo's 10% canary took some keys

    items = [{"request_id": a["request_id"], "label": CLASSES[data.target[picks[i]]]}
             for i, a in enumerate(answers)]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/feedback", json={"model": "breast_cancer", "items": items},
                   headers=server.headers("feedback"))
        assert (r.status_code, r.json()) == (202, {"model": "breast_cancer", "accepted": N})

        def labelled(s: dict[str, Any]) -> bool:
            return s["feedback"].get("joined", 0) == N and s["monitor"]["lag_events"] == 0

        s = wait_for(lambda: stats(c, server), labelled)
    assert s["feedback"] == {"joined": N, "duplicate": 0, "unmatched": 0}

    # the Monitor counted every request once, per variant, and every shadow answer
    records = log_records(server.data_dir)
    predictions = [x["data"] for x in records if x["type"] == "vigil.prediction.v1"]
    shadows = [p for p in predictions if p["variant"] == "shadow"]
    assert len(predictions) - len(shadows) == N and len(shadows) == N
    assert {x["data"]["request_id"] for x in records if x["type"] == "vigil.feedback.v1"} == \
        {a["request_id"] for a in answers}
    counted = {(v, var): r["requests"] for v, d in s["versions"].items() for var, r in d.items()}
    assert counted == {**by_variant, ("v3", "shadow"): N}
    assert all(p["inputs"][0].keys() == set(data.feature_names) for p in predictions)

    # quality equals scikit-learn's on the same (answer, label) pairs, shadows included
    truth_of = {a["request_id"]: int(data.target[picks[i]]) for i, a in enumerate(answers)}
    pairs: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for p in predictions:
        pairs.setdefault((p["version"], p["variant"]), []).append(
            (truth_of[p["request_id"]], p["outputs"][0]))
    for (version, variant), got in pairs.items():
        y = np.array([t for t, _ in got])
        pred = np.array([o["label_index"] for _, o in got])
        proba = np.array([[o["probabilities"][c] for c in CLASSES] for _, o in got])
        proba = proba / proba.sum(axis=1, keepdims=True)  # float32 outputs: sum is 1 ± 1e-7
        q = s["versions"][version][variant]["quality"]
        for view in ("cumulative", "window"):
            m = q[view]
            assert m["labels"] == len(got)
            assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-9)
            assert m["precision"] == pytest.approx(
                skm.precision_score(y, pred, zero_division=0), abs=1e-9)
            assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0),
                                                abs=1e-9)
            assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0), abs=1e-9)
            assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=[0, 1]),
                                                  abs=1e-6)
            if len(set(y)) == 2:
                scores = proba[:, 1]
                if view == "cumulative":  # from 1,000-bin histograms: scores in a bin tie
                    raw = np.array([o["probabilities"][CLASSES[1]] for _, o in got])
                    scores = np.clip((raw * AUC_BINS).astype(int), 0, AUC_BINS - 1)
                auc = skm.roc_auc_score(y, scores)
                assert m["roc_auc"] == pytest.approx(auc, abs=1e-9)
    champion = s["versions"]["v1"]["champion"]
    lat = champion["latency_seconds"]  # measured quantiles, in order
    assert None not in lat.values() and lat["p50"] <= lat["p95"] <= lat["p99"]
    assert champion["error_rate"] == 0.0
    assert sum(champion["predictions"]["labels"].values()) == by_variant[("v1", "champion")]


def test_feedback_errors_and_auth(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        body = {"model": "breast_cancer", "request_id": "abc", "label": "benign"}
        assert c.post("/feedback", json=body).status_code == 401  # auth.feedback: required
        r = c.post("/feedback", json=body, headers=server.headers("client"))
        assert r.status_code == 403
        r = c.post("/feedback", json={"model": "breast_cancer", "items": [
            {"request_id": "a", "label": "benign"}, {"request_id": "b", "label": "cat"},
            {"request_id": "c"}]}, headers=server.headers("feedback"))
        assert r.status_code == 422
        assert r.json()["errors"] == [
            {"field": "items[1].label",
             "reason": "'cat' is not a class of this model (one of ['malignant', 'benign'], "
                       "or its index)"},
            {"field": "items[2].label", "reason": "is required, one of ['malignant', 'benign']"}]
        r = c.post("/feedback", json={"model": "nope", "request_id": "a", "label": 1},
                   headers=server.headers("feedback"))
        assert (r.status_code, r.json()["field"]) == (404, "model")
        r = c.post("/feedback", content=b"{", headers=server.headers("feedback"))
        assert (r.status_code, r.json()["field"]) == (422, "body")
        r = c.post("/feedback", json={"model": "diabetes", "request_id": "a", "value": 3.5},
                   headers=server.headers("admin"))
        assert r.status_code == 202
        r = c.get("/admin/models/nope/stats", headers=server.headers("viewer"))
        assert r.status_code == 404
        assert c.get("/admin/models/breast_cancer/stats",
                     headers=server.headers("feedback")).status_code == 403


def test_export_writes_one_parquet_row_per_prediction(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/predict", json={"model": "diabetes", "instances": [[0.01] * 10] * 3})
        assert r.status_code == 200
        rid = r.json()["request_id"]
    out = tmp_path / "diabetes.parquet"

    def exported() -> int:
        return export_parquet(server.data_dir / "log", out, model="diabetes")

    wait_for(exported, lambda n: n >= 3, timeout=20)
    df = pd.read_parquet(out)
    mine = df[df["request_id"] == rid]
    assert list(mine["row"]) == [0, 1, 2]
    assert set(mine["variant"]) == {"champion"} and (mine["model"] == "diabetes").all()
    assert "input.age" in df.columns and "output.value" in df.columns
    assert mine["input.age"].tolist() == [0.01] * 3

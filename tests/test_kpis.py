"""Business KPI outcomes: validated at /feedback against the model's declared KPIs, joined per
request to the answer that served it by the real Monitor (shadows never), counted once, and
summed per (version, variant) in the step's transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from monitoring.log.sink import LogSink, render
from monitoring.log.writer import SegmentWriter
from monitoring.quality.feedback import FeedbackInvalid, validate_feedback
from monitoring.quality.outcomes import KpiJoin, read_kpis
from store import PredictionIndex
from store.kpis import KpiStore
from tests.test_monitor import emit, monitor

DECLARED = {"conversion": "binary", "revenue": "continuous"}


def card() -> Any:
    class Card:
        is_classifier = True
        class_labels = ["a", "b"]
    return Card()


def test_kpis_come_with_or_without_a_label() -> None:
    items = validate_feedback(card(), {"model": "m", "items": [
        {"request_id": "r1", "kpis": {"conversion": 1, "revenue": 12.5}},
        {"request_id": "r2", "label": "a", "kpis": {"conversion": 0}}]}, 10, DECLARED)
    assert items[0] == {"request_id": "r1", "row": 0,
                        "kpis": {"conversion": 1.0, "revenue": 12.5}}
    assert items[1]["label"] == "a" and items[1]["kpis"] == {"conversion": 0.0}


@pytest.mark.parametrize(("kpis", "field"), [
    ({"churn": 1}, "kpis.churn"),  # undeclared: named
    ({"conversion": 2}, "kpis.conversion"),  # binary
    ({"revenue": float("nan")}, "kpis.revenue"),
    ({"revenue": True}, "kpis.revenue"),
    ({}, "kpis"),
])
def test_a_bad_kpi_is_refused_naming_it(kpis: dict[str, Any], field: str) -> None:
    with pytest.raises(FeedbackInvalid) as exc:
        validate_feedback(card(), {"model": "m", "request_id": "r1", "kpis": kpis}, 10,
                          DECLARED)
    assert exc.value.problems[0][0] == field
    if field == "kpis.churn":
        assert "undeclared KPI 'churn'" in exc.value.problems[0][1]


def test_the_monitor_joins_outcomes_to_the_answer_that_served(engine: sa.Engine,
                                                              tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    # r9's outcome arrives before its prediction is read: it waits
    sink.feedback("m", [{"request_id": "r9", "row": 0, "kpis": {"conversion": 1.0}}], 1.0)
    writer.close()
    kpis = KpiJoin(KpiStore(engine), PredictionIndex(engine), pending_seconds=0)
    m = monitor(engine, tmp_path, pending_label_seconds=0, kpis=kpis)
    m.tick()
    writer = SegmentWriter(tmp_path, "gw2-2-2", render)
    sink = LogSink(writer)
    for i in range(10):
        emit(sink, i, "experiment", "v2" if i % 2 else "v1")
        emit(sink, i, "shadow", "v3")
    sink.feedback("m", [{"request_id": f"r{i}", "row": 0,
                         "kpis": {"conversion": float(i % 4 == 1), "revenue": float(i)}}
                        for i in range(9)], 2.0)
    sink.feedback("m", [{"request_id": "r1", "row": 0, "label": "b",
                         "kpis": {"conversion": 0.0}},  # a duplicate outcome, a new label
                        {"request_id": "gone", "row": 0, "kpis": {"conversion": 1.0}}], 3.0)
    writer.close()
    m.tick()
    m.tick()  # caught up: the outcome of an unknown request gives up
    got = read_kpis(KpiStore(engine), "m")
    assert set(got) == {"v1", "v2"}  # never the shadow
    v1, v2 = got["v1"]["experiment"], got["v2"]["experiment"]
    assert v2["conversion"] == {"count": 5, "sum": 2, "sum_squares": 2, "mean": 0.4}  # r1,r5,r9
    assert v1["conversion"]["count"] == 5 and v1["conversion"]["sum"] == 0
    assert v1["revenue"] == {"count": 5, "sum": 20, "sum_squares": 120, "mean": 4.0}
    assert v2["revenue"]["count"] == 4  # r9 sent no revenue
    assert kpis.counts == {"pending": 2, "joined": 19, "duplicate": 1, "unmatched": 1}


def test_outcomes_export_to_parquet_one_row_per_request(engine: sa.Engine,
                                                        tmp_path: Path) -> None:
    import pandas as pd

    from monitoring.quality.outcomes import export_outcomes
    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    for i in range(3):
        emit(sink, i, "experiment", "v2" if i % 2 else "v1")
    sink.feedback("m", [{"request_id": f"r{i}", "row": 0, "label": "a",
                         "kpis": {"conversion": float(i == 1), "revenue": 5.0 * i}}
                        for i in range(3)], 2.0)
    writer.close()
    m = monitor(engine, tmp_path, kpis=KpiJoin(KpiStore(engine), PredictionIndex(engine)))
    m.tick()
    path = tmp_path / "outcomes.parquet"
    assert export_outcomes(KpiStore(engine), "m", path) == 3
    df = pd.read_parquet(path).sort_values("request_id")
    assert list(df["version"]) == ["v1", "v2", "v1"]
    assert list(df["kpi.conversion"]) == [0.0, 1.0, 0.0]
    assert list(df["kpi.revenue"]) == [0.0, 5.0, 10.0]
    assert set(df["label"]) == {'"a"'} and set(df["variant"]) == {"experiment"}



def test_a_waiting_outcome_is_joined_once_and_only_by_its_models_owner(
        engine: sa.Engine, tmp_path: Path) -> None:
    """Several Monitors share the store (log.backend: nats): a Monitor that does not own the
    model neither joins nor gives up its waiting outcome, and an outcome two Monitors both
    read as waiting is counted once."""
    from store import reading, transaction

    writer = SegmentWriter(tmp_path, "gw1-1-1", render)
    sink = LogSink(writer)
    sink.feedback("m", [{"request_id": "r1", "row": 0, "kpis": {"conversion": 1.0}}], 1.0)
    writer.close()
    m = monitor(engine, tmp_path, pending_label_seconds=0,
                kpis=KpiJoin(KpiStore(engine), PredictionIndex(engine), pending_seconds=0))
    m.tick()  # r1's outcome waits: its prediction is not in the log yet
    other = KpiJoin(KpiStore(engine), PredictionIndex(engine), pending_seconds=0)
    other.owns = lambda model: False  # another replica, whose Monitor has not read m's log
    with transaction(engine) as tx:  # caught up on its own partitions, long after: it would
        other.join(tx, [], now=10**9, caught_up=True)  # give the outcome up if it could
    with reading(engine) as tx:
        stale = KpiStore(engine).held(tx)  # what a slower Monitor read as waiting
    assert [h.request_id for h in stale] == ["r1"]
    writer = SegmentWriter(tmp_path, "gw2-2-2", render)
    emit(LogSink(writer), 1, "champion", "v1")
    writer.close()
    m.tick()  # the prediction is indexed and the waiting outcome joined

    class Slow(KpiStore):
        def held(self, tx: Any) -> Any:
            return stale

    slow = KpiJoin(Slow(engine), PredictionIndex(engine), pending_seconds=0)
    with transaction(engine) as tx:
        slow.join(tx, [], now=10**9, caught_up=True)
    got = read_kpis(KpiStore(engine), "m")
    assert got["v1"]["champion"]["conversion"]["count"] == 1
    assert other.counts == {} and "joined" not in slow.counts

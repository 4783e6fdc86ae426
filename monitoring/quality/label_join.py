"""The feedback join: ground-truth labels against the prediction index, in the Monitor's
transaction. A label scores every version that answered its request (champion, canary,
shadows); an answer indexed after its request's label (a shadow's, run a tick later) is
scored on arrival with the labels already joined. What scoring means (stats, the error
stream) is the caller's ``score``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from store.tables import prediction_index

Key = tuple[str, str, str]  # model, version, variant
# a shadow's answer is indexed seconds after its request, so without a join in this long no
# label can be waiting for it, and the lookup is skipped (a SELECT a step: 7% of the tick
# thread's CPU with a shadow on every request)
LATE_LABEL_SECONDS = 600.0


class LabelJoin:
    """``score(request_id, key, output_row, truth, changed)`` scores one label against one
    answer's row and says whether it fit."""

    def __init__(self, score: Callable[[str, Key, Any, Any, set[Key]], bool]) -> None:
        self._score = score
        # when a label was last joined; None since the start until the log was first read
        # to its end: answers written before a restart may be waiting in it for labels joined
        # before it. After that, an answer's request was read since the start, so a label
        # waiting for it was joined since the start too.
        self.last_join: float | None = None

    def caught_up(self) -> None:
        """The log was read to its end: from now on a label can wait for an answer only if
        one was joined since the start, so without one the lookups are skipped."""
        if self.last_join is None:
            self.last_join = -math.inf

    def join(self, conn: sa.Connection, items: list[dict[str, Any]],
              changed: set[Key]) -> list[str]:
        """Score every version that answered each labelled request. Per item: 'joined',
        'duplicate', 'missing' (no prediction indexed yet) or 'unmatched' (no such row).
        One SELECT per 500 request ids and one batched UPDATE, whatever the item count."""
        if not items:
            return []
        found: dict[tuple[str, str], dict[tuple[str, str], Any]] = {}
        rids = sorted({str(d.get("request_id")) for d in items})
        for i in range(0, len(rids), 500):
            for r in conn.execute(sa.select(prediction_index).where(
                    prediction_index.c.request_id.in_(rids[i:i + 500])).order_by(
                    prediction_index.c.ts, prediction_index.c.id)):
                # a reused request id: the latest answer of each version counts
                found.setdefault((r.request_id, r.model), {})[(r.version, r.variant)] = r
        labeled: dict[int, list[int]] = {}
        truths: dict[int, dict[str, Any]] = {}
        outputs: dict[int, list[Any]] = {}
        outcomes = []
        for data in items:
            rid, model = str(data.get("request_id")), str(data.get("model"))
            answers = found.get((rid, model))
            if not answers:
                outcomes.append("missing")
                continue
            row_i = int(data.get("row") or 0)
            truth = data["label"] if "label" in data else data.get("value")
            scored = seen = 0
            for (version, variant), r in answers.items():
                if r.id not in outputs:
                    outputs[r.id] = orjson.loads(r.outputs)
                    labeled[r.id] = orjson.loads(r.labeled_rows) if r.labeled_rows else []
                    truths[r.id] = orjson.loads(r.labels) if r.labels else {}
                if row_i >= len(outputs[r.id]):
                    continue
                seen += 1
                if row_i in labeled[r.id]:
                    continue
                if not self._score(rid, (model, version, variant), outputs[r.id][row_i], truth,
                                   changed):
                    continue
                labeled[r.id] = [*labeled[r.id], row_i]
                truths[r.id] = {**truths[r.id], str(row_i): truth}
                scored += 1
                self.last_join = time.monotonic()
            outcomes.append("joined" if scored else "duplicate" if seen else "unmatched")
        updates = [{"_id": rid_, "_rows": orjson.dumps(rows).decode(),
                    "_labels": orjson.dumps(truths[rid_]).decode()}
                   for rid_, rows in labeled.items() if rows]
        if updates:
            conn.execute(prediction_index.update().where(
                prediction_index.c.id == sa.bindparam("_id")).values(
                labeled_rows=sa.bindparam("_rows"), labels=sa.bindparam("_labels")), updates)
        return outcomes

    def label_late(self, conn: sa.Connection, rows: list[tuple[Any, ...]],
                   changed: set[Key]) -> list[tuple[Any, ...]]:
        """Index rows of answers that may come after their request's label (a shadow's):
        each scored with the labels already joined to its request, and marked labelled."""
        if self.last_join is not None and time.monotonic() - self.last_join > LATE_LABEL_SECONDS:
            return [(*r, None, None) for r in rows]
        known: dict[tuple[str, str], dict[str, Any]] = {}
        rids = sorted({r[0] for r in rows})
        for i in range(0, len(rids), 500):
            for r in conn.execute(sa.select(
                    prediction_index.c.request_id, prediction_index.c.model,
                    prediction_index.c.labels).where(
                    prediction_index.c.request_id.in_(rids[i:i + 500]),
                    prediction_index.c.labels.is_not(None))):
                known.setdefault((r.request_id, r.model), {}).update(orjson.loads(r.labels))
        out = []
        for rid, model, version, variant, ts, outputs_json in rows:
            labels = known.get((rid, model))
            if not labels:
                out.append((rid, model, version, variant, ts, outputs_json, None, None))
                continue
            outputs = orjson.loads(outputs_json)
            scored: dict[str, Any] = {}
            for row, truth in labels.items():
                if int(row) < len(outputs) and self._score(
                        rid, (model, version, variant), outputs[int(row)], truth, changed):
                    scored[row] = truth
            out.append((rid, model, version, variant, ts, outputs_json,
                        orjson.dumps(sorted(int(r) for r in scored)).decode(),
                        orjson.dumps(scored).decode() if scored else None))
        return out

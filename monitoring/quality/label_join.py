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

from store import PredictionIndex, Transaction
from store.predictions import IndexedAnswer, IndexRow, LabelledRow

Key = tuple[str, str, str]  # model, version, variant
# a shadow's answer is indexed seconds after its request, so without a join in this long no
# label can be waiting for it, and the lookup is skipped (a SELECT a step: 7% of the tick
# thread's CPU with a shadow on every request)
LATE_LABEL_SECONDS = 600.0


class LabelJoin:
    """``score(request_id, key, output_row, truth, changed)`` scores one label against one
    answer's row and says whether it fit."""

    def __init__(self, index: PredictionIndex,
                 score: Callable[[str, Key, Any, Any, set[Key]], bool]) -> None:
        self.index = index
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

    def join(self, tx: Transaction, items: list[dict[str, Any]],
             changed: set[Key]) -> list[str]:
        """Score every version that answered each labelled request. Per item: 'joined',
        'duplicate', 'missing' (no prediction indexed yet) or 'unmatched' (no such row).
        One SELECT per 500 request ids and one batched UPDATE, whatever the item count."""
        if not items:
            return []
        found: dict[tuple[str, str], dict[tuple[str, str], IndexedAnswer]] = {}
        for a in self.index.answers(tx, sorted({str(d.get("request_id")) for d in items})):
            # a reused request id: the latest answer of each version counts
            found.setdefault((a.request_id, a.model), {})[(a.version, a.variant)] = a
        labeled: dict[int, list[int]] = {}
        truths: dict[int, dict[str, Any]] = {}
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
            for (version, variant), a in answers.items():
                if a.id not in labeled:
                    labeled[a.id] = a.labeled_rows
                    truths[a.id] = a.labels
                if row_i >= len(a.outputs):
                    continue
                seen += 1
                if row_i in labeled[a.id]:
                    continue
                if not self._score(rid, (model, version, variant), a.outputs[row_i], truth,
                                   changed):
                    continue
                labeled[a.id] = [*labeled[a.id], row_i]
                truths[a.id] = {**truths[a.id], str(row_i): truth}
                scored += 1
                self.last_join = time.monotonic()
            outcomes.append("joined" if scored else "duplicate" if seen else "unmatched")
        self.index.mark_labelled(tx, [(id_, rows, truths[id_])
                                      for id_, rows in labeled.items() if rows])
        return outcomes

    def label_late(self, tx: Transaction, rows: list[IndexRow], changed: set[Key]
                   ) -> tuple[list[IndexRow], list[LabelledRow]]:
        """Index rows of answers that may come after their request's label (a shadow's),
        split: those whose request has no label joined yet, and the others, each scored with
        the labels already joined to its request and marked labelled."""
        if self.last_join is not None and time.monotonic() - self.last_join > LATE_LABEL_SECONDS:
            return rows, []
        known = self.index.joined_labels(tx, sorted({r[0] for r in rows}))
        plain: list[IndexRow] = []
        labelled: list[LabelledRow] = []
        for r in rows:
            rid, model, version, variant, ts, outputs_json = r
            labels = known.get((rid, model))
            if not labels:
                plain.append(r)
                continue
            outputs = orjson.loads(outputs_json)
            scored: dict[str, Any] = {}
            for row, truth in labels.items():
                if int(row) < len(outputs) and self._score(
                        rid, (model, version, variant), outputs[int(row)], truth, changed):
                    scored[row] = truth
            labelled.append((*r, sorted(int(i) for i in scored), scored or None))
        return plain, labelled

"""Validate ``POST /feedback`` bodies against the model's task, as a whole.

One item ``{"model", "request_id", "label" | "value", "row"?, "kpis"?}`` or a batch
``{"model", "items": [{"request_id", "label" | "value", "row"?, "kpis"?}, ...]}``; with
``kpis`` (business outcomes, each a KPI declared for the model) the label is optional. A
classifier's label is one of the card's class labels (or its index); a regressor's value is a
finite number.
Every bad item is reported (field and reason); one bad item refuses the whole batch.
Pure: plain values in, normalized items out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from models.card import ModelCard

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
ITEM_FIELDS = {"request_id", "label", "value", "row", "kpis"}
TOP_FIELDS = {"model", "items"}


class FeedbackInvalid(ValueError):
    def __init__(self, problems: list[tuple[str, str]], total: int) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
        self.total = total


def normalize_item(card: ModelCard, item: Any, where: str, problems: list[tuple[str, str]],
                   kpis: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        problems.append((where or "body", "must be an object with request_id and "
                         + ("label" if card.is_classifier else "value")))
        return None
    prefix = f"{where}." if where else ""
    start = len(problems)
    for name in sorted(set(item) - ITEM_FIELDS, key=str):
        problems.append((f"{prefix}{name or repr(name)}",
                         f"unknown field (allowed: {sorted(ITEM_FIELDS)})"))
    rid = item.get("request_id")
    if not isinstance(rid, str) or not REQUEST_ID_RE.match(rid):
        problems.append((f"{prefix}request_id",
                         "is required: the request_id of the prediction (1–128 safe characters)"))
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        problems.append((f"{prefix}row", "must be a non-negative integer (the row of a batch)"))
    out: dict[str, Any] = {"request_id": rid, "row": row}
    if "kpis" in item:
        out["kpis"] = normalize_kpis(item["kpis"], kpis or {}, f"{prefix}kpis", problems)
    if "kpis" in item and "label" not in item and "value" not in item:
        return out if len(problems) == start else None  # outcomes only, no label
    if card.is_classifier:
        labels = list(card.class_labels or ())
        if "value" in item:
            problems.append((f"{prefix}value", "this model is a classifier: send 'label'"))
        if "label" not in item:
            problems.append((f"{prefix}label", f"is required, one of {labels}"))
        else:
            label = item["label"]
            if isinstance(label, str) and label in labels:
                out["label"] = label
            elif isinstance(label, int) and not isinstance(label, bool) and \
                    0 <= label < len(labels):
                out["label"] = labels[label]
            else:
                problems.append((f"{prefix}label", f"{label!r} is not a class of this model "
                                 f"(one of {labels}, or its index)"))
    else:
        if "label" in item:
            problems.append((f"{prefix}label", "this model is a regressor: send 'value'"))
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            problems.append((f"{prefix}value", "is required and must be a finite number"))
        else:
            out["value"] = float(value)
    return out if len(problems) == start else None


def normalize_kpis(doc: Any, declared: Mapping[str, str], where: str,
                   problems: list[tuple[str, str]]) -> dict[str, float]:
    """``{name: finite number}``, each name declared for the model (name -> kind: a binary
    KPI is 0 or 1)."""
    if not isinstance(doc, dict) or not doc:
        problems.append((where, "must be a non-empty object of KPI name to number"))
        return {}
    out = {}
    for name, value in doc.items():
        if name not in declared:
            problems.append((f"{where}.{name}", f"undeclared KPI '{name}' (declared for this "
                             f"model: {sorted(declared)})"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            problems.append((f"{where}.{name}", "must be a finite number"))
        elif declared[name] == "binary" and value not in (0, 1):
            problems.append((f"{where}.{name}", "is a binary KPI: 0 or 1"))
        else:
            out[name] = float(value)
    return out


def validate_feedback(card: ModelCard, body: dict[str, Any], max_items: int,
                      kpis: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The normalized items, or ``FeedbackInvalid`` listing every problem. ``kpis``: the
    model's declared KPIs, name -> kind."""
    problems: list[tuple[str, str]] = []
    if "items" in body:
        for name in sorted(set(body) - TOP_FIELDS):
            problems.append((name, "unknown field next to 'items' (allowed: model, items)"))
        items = body["items"]
        if not isinstance(items, list) or not items:
            raise FeedbackInvalid([("items", "must be a non-empty list of label objects")], 0)
        if len(items) > max_items:
            raise FeedbackInvalid([("items", f"{len(items)} items; the limit is {max_items}")],
                                  len(items))
        out = [normalize_item(card, item, f"items[{i}]", problems, kpis)
               for i, item in enumerate(items)]
        total = len(items)
    else:
        single = {k: v for k, v in body.items() if k != "model"}
        out = [normalize_item(card, single, "", problems, kpis)]
        total = 1
    if problems:
        raise FeedbackInvalid(problems, total)
    return [o for o in out if o is not None]

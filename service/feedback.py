"""``POST /feedback``: validate a label batch as a whole, then queue it on the prediction log
(the Monitor joins it to the prediction by request id)."""

from __future__ import annotations

import time
from typing import Any

from models.errors import InvalidInput, InvalidItems, ModelNotFound, Unavailable
from monitoring.quality.feedback import FeedbackInvalid, validate_feedback
from service.context import WorkerContext


def accept_feedback(ctx: WorkerContext, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("model", "is required: the model whose predictions are labelled")
    served = ctx.live.get(model)
    if served is None:
        raise ModelNotFound(model)
    metrics = ctx.metrics
    try:
        declared = {k.name: k.kind for k in ctx.settings.kpis.get(model, ())}
        items = validate_feedback(served.card, body, ctx.settings.limits.max_feedback_items,
                                  declared)
    except FeedbackInvalid as exc:
        if metrics is not None:
            metrics.feedback_items.labels(model, "rejected").inc(max(exc.total, 1))
        raise InvalidItems(exc.problems, exc.total) from None
    if ctx.log is None:
        raise Unavailable("the prediction log is disabled (log.enabled: false); labels cannot "
                          "be joined", retry_after=60)
    if not ctx.log.feedback(model, items, time.time()):
        if metrics is not None:
            metrics.feedback_items.labels(model, "unavailable").inc(len(items))
        raise Unavailable("the prediction log cannot take labels now (queue full or log not "
                          "writable); retry the whole batch", retry_after=1)
    if metrics is not None:
        metrics.feedback_items.labels(model, "accepted").inc(len(items))
    return {"model": model, "accepted": len(items)}

"""Prediction events and the sink interface the Gateway hands them to.

The Gateway emits one ``PredictionEvent`` per answered request, naming the shadows that are
to see it; the Monitor runs them and emits one per shadow prediction (the same
``request_id``). ``monitoring.log.writer`` makes them durable records;
``InMemoryStatsSink`` keeps per-version counters in memory (tests, and a worker's own view).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PredictionEvent:
    request_id: str
    model: str
    version: str
    variant: str  # champion | canary | shadow | explicit
    time: float
    rows: int
    latency_seconds: float
    status: str  # ok | error | timeout
    # the request's input matrix (numpy), rendered by the log writer with ``features``; or
    # its named records already (a list), written as they are
    inputs: Any = None
    features: Sequence[Any] | None = None  # the card's features, to name the inputs
    outputs: list[dict[str, Any]] | None = None
    error: str | None = None
    primary_version: str | None = None  # for a shadow: the version whose answer was returned
    agreement: float | None = None  # for a shadow: share of rows that agree with the primary
    shadows: tuple[str, ...] = ()  # for a primary: the shadow versions the Monitor runs on it


class EventSink(Protocol):
    def emit(self, event: PredictionEvent) -> None:
        """Take an event; must never block the caller."""


@dataclass
class VersionCounters:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    latency_seconds_sum: float = 0.0
    agreement_sum: float = 0.0
    agreement_rows: int = 0
    by_variant: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class InMemoryStatsSink:
    """Per (model, version) counters and champion-vs-shadow agreement, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], VersionCounters] = defaultdict(VersionCounters)

    def emit(self, event: PredictionEvent) -> None:
        with self._lock:
            c = self._counters[(event.model, event.version)]
            c.requests += 1
            c.rows += event.rows
            c.by_variant[event.variant] += 1
            c.latency_seconds_sum += event.latency_seconds
            if event.status != "ok":
                c.errors += 1
            if event.agreement is not None:
                c.agreement_sum += event.agreement * event.rows
                c.agreement_rows += event.rows

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
            for (model, version), c in sorted(self._counters.items()):
                out[model][version] = {
                    "requests": c.requests, "rows": c.rows, "errors": c.errors,
                    "by_variant": dict(c.by_variant),
                    "mean_latency_seconds": c.latency_seconds_sum / c.requests
                    if c.requests else None,
                    "agreement": c.agreement_sum / c.agreement_rows if c.agreement_rows
                    else None,
                }
            return dict(out)


def agreement(primary: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> float:
    """Share of rows where a shadow agrees with the primary: same label, or a regressor
    value within 1% (relative) of the primary's."""
    if not primary:
        return 1.0
    same = 0
    for p, s in zip(primary, shadow, strict=True):
        if "label" in p:
            same += p["label"] == s.get("label")
        else:
            a, b = p["value"], s["value"]
            same += abs(a - b) <= 0.01 * max(abs(a), abs(b), 1e-12)
    return same / len(primary)

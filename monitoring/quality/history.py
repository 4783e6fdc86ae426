"""The per-minute history the console draws: the changed versions' cumulative counters,
written by the Monitor into ``store.history`` inside the transaction that commits them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from monitoring.quality.stats import Sketch, VersionStats
from store.history import Totals, counts_at_or_under, record
from store.transaction import Transaction

Key = tuple[str, str, str]  # model, version, variant


def totals(stats: Mapping[Key, VersionStats], keys: Iterable[Key]) -> list[Totals]:
    """The cumulative counters of ``keys`` (latency as counts under the history's bounds)."""
    return [Totals(*key, s.requests, s.errors, s.rows,
                   counts_at_or_under(s.latency.pos, s.latency.zero, Sketch.LOG_GAMMA))
            for key in sorted(keys) for s in (stats[key],)]


def record_minute(tx: Transaction, now: float, stats: Mapping[Key, VersionStats],
                  changed: Iterable[Key]) -> None:
    """Write the changed keys' totals into the current minute's history rows."""
    record(tx, now, totals(stats, changed))

"""The Monitor's per-minute history: what the console draws "over the last hour".

One row per (model, version, variant, minute) holds the *cumulative* counters as the Monitor
committed them during that minute (requests, errors, rows, and the latency histogram as
counts at or under ``LATENCY_BOUNDS``). The row is overwritten by every commit in its minute,
in the Monitor's own transaction, so it is never ahead of or behind the stats it mirrors,
and a replayed batch rewrites the same values. A minute's figures are the difference
between its row and the key's row before it, taken when read; counts are attributed to the
minute the Monitor committed them, so its lag shifts them (by seconds, when it keeps up).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from store.tables import monitor_history
from store.transaction import Transaction

# 0.1 ms .. ~65 s, each bound 1.5x the last: a quantile within a bucket, interpolated
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.0001 * 1.5 ** i for i in range(34))
RETENTION_MINUTES = 24 * 60



@dataclass(frozen=True)
class Totals:
    """One (model, version, variant)'s cumulative counters at a commit."""

    model: str
    version: str
    variant: str
    requests: int
    errors: int
    rows: int
    latency_le: Sequence[int]  # counts at or under each of LATENCY_BOUNDS, then the total


def record(tx: Transaction, now: float, totals: Iterable[Totals]) -> None:
    """Write each key's totals into its row for the current minute, inside the caller's
    transaction. A key's first write in a minute inserts the row and prunes its rows older
    than ``RETENTION_MINUTES``."""
    conn = tx.connection
    minute = int(now // 60)
    t = monitor_history
    for x in totals:
        key = (t.c.model == x.model, t.c.version == x.version, t.c.variant == x.variant)
        values = {"requests": x.requests, "errors": x.errors, "rows": x.rows,
                  "latency": orjson.dumps(list(x.latency_le)).decode(), "updated_at": now}
        if conn.execute(t.update().where(*key, t.c.minute == minute).values(values)).rowcount:
            continue
        conn.execute(t.insert().values(model=x.model, version=x.version, variant=x.variant,
                                       minute=minute, **values))
        conn.execute(t.delete().where(*key, t.c.minute < minute - RETENTION_MINUTES))


def read(engine: sa.Engine, model: str, minutes: int, now: float) -> dict[str, Any]:
    """The last ``minutes`` minutes of ``model``, per version and variant: each minute's
    requests, errors, rows and latency p50/p99 (seconds; None without requests)."""
    t = monitor_history
    start = int(now // 60) - minutes + 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.model == model, t.c.minute >= start)
                            .order_by(t.c.version, t.c.variant, t.c.minute)).all()
        before = sa.select(t.c.version, t.c.variant, sa.func.max(t.c.minute).label("m")).where(
            t.c.model == model, t.c.minute < start).group_by(t.c.version, t.c.variant).subquery()
        baselines = conn.execute(sa.select(t).join(before, sa.and_(
            t.c.version == before.c.version, t.c.variant == before.c.variant,
            t.c.minute == before.c.m)).where(t.c.model == model)).all()
    baseline = {(r.version, r.variant): r for r in baselines}
    previous = dict(baseline)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    last: dict[tuple[str, str], Any] = {}
    for r in rows:
        key = (r.version, r.variant)
        series.setdefault(key, []).append(_between(previous.get(key), r, t=r.minute * 60))
        previous[key] = last[key] = r
    return {"model": model, "minute_seconds": 60, "from": start * 60, "now": now,
            "series": [{"version": v, "variant": var, "points": points,
                        "window": _between(baseline.get((v, var)), last[(v, var)])}
                       for (v, var), points in series.items()]}


def _between(prev: Any, row: Any, **extra: Any) -> dict[str, Any]:
    """What happened between two rows of a key (from nothing when ``prev`` is None)."""
    le = orjson.loads(row.latency)
    base = orjson.loads(prev.latency) if prev is not None else [0] * len(le)
    counts = [a - b for a, b in zip(le, base, strict=False)]
    return {**extra, "requests": row.requests - (prev.requests if prev is not None else 0),
            "errors": row.errors - (prev.errors if prev is not None else 0),
            "rows": row.rows - (prev.rows if prev is not None else 0),
            "p50": quantile(counts, 0.5), "p99": quantile(counts, 0.99)}


def quantile(le: Sequence[int], q: float) -> float | None:
    """The q-quantile of a histogram given as counts at or under ``LATENCY_BOUNDS`` and then
    the total, interpolated inside its bucket (the last bound when it lies above them all);
    None when it holds nothing.

    >>> quantile([0, 10, 10] + [10] * 32, 0.5)
    0.000125
    >>> quantile([0] * 35, 0.99) is None
    True
    """
    n = le[-1] if le else 0
    if n <= 0:
        return None
    rank = q * n
    low_count, low = 0, 0.0
    for bound, count in zip(LATENCY_BOUNDS, le[:-1], strict=False):
        if count >= rank:
            share = (rank - low_count) / (count - low_count) if count > low_count else 1.0
            return round(low + share * (bound - low), 6)
        low_count, low = count, bound
    return LATENCY_BOUNDS[-1]


def counts_at_or_under(keys: dict[int, int], zero: int, log_gamma: float) -> list[int]:
    """Counts at or under each of ``LATENCY_BOUNDS``, then the total, from a log-bucketed
    sketch whose bucket ``k`` holds the values in (gamma**(k-1), gamma**k] (the Monitor's
    DDSketch; ``zero`` counts the values at 0).

    >>> import math
    >>> counts_at_or_under({math.ceil(math.log(0.001) / math.log(1.02)): 3}, 1,
    ...                    math.log(1.02))[:8]
    [1, 1, 1, 1, 1, 1, 4, 4]
    """
    limits = [math.floor(math.log(b) / log_gamma) for b in LATENCY_BOUNDS]
    buckets = [0] * (len(limits) + 1)
    for k, c in keys.items():
        buckets[bisect.bisect_left(limits, k)] += c
    out, seen = [], zero
    for c in buckets:
        seen += c
        out.append(seen)
    return out

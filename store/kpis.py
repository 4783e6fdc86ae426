"""Business KPI outcomes: one row per (request, model, KPI), joined to the answer that served
the request (``kpi_outcomes``), and their sums per (model, version, variant, KPI)
(``kpi_stats``: count, sum, sum of squares; a binary KPI's sum is its successes). Written in
the Monitor's step transaction; read by the admin API, the metrics and the experiments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from store.engine import insert_rows
from store.tables import kpi_outcomes, kpi_stats
from store.transaction import Engine, Transaction

StatKey = tuple[str, str, str, str]  # model, version, variant, kpi
CHUNK = 500


@dataclass(frozen=True, slots=True)
class KpiSums:
    n: float
    total: float
    total_sq: float


@dataclass(frozen=True, slots=True)
class HeldOutcome:
    """An outcome whose prediction was not read yet."""

    id: int
    request_id: str
    model: str
    kpi: str
    value: float
    ts: float


class KpiStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def known(self, tx: Transaction, keys: Sequence[tuple[str, str, str]]
              ) -> set[tuple[str, str, str]]:
        """Which (request id, model, KPI) already have an outcome (joined or waiting)."""
        found: set[tuple[str, str, str]] = set()
        rids = sorted({k[0] for k in keys})
        for i in range(0, len(rids), CHUNK):
            for r in tx.connection.execute(sa.select(
                    kpi_outcomes.c.request_id, kpi_outcomes.c.model, kpi_outcomes.c.kpi).where(
                    kpi_outcomes.c.request_id.in_(rids[i:i + CHUNK]))):
                found.add((r.request_id, r.model, r.kpi))
        return found

    def record(self, tx: Transaction, rows: Sequence[tuple[str, str, str, float, str | None,
                                                          str | None, str | None, float]]
               ) -> None:
        """New outcomes: (request id, model, KPI, value, version, variant, label JSON, ts);
        version None while the prediction has not been read."""
        insert_rows(tx.connection, kpi_outcomes, ("request_id", "model", "kpi", "value",
                                                  "version", "variant", "label", "ts"), rows)

    def held(self, tx: Transaction) -> list[HeldOutcome]:
        return [HeldOutcome(r.id, r.request_id, r.model, r.kpi, r.value, r.ts)
                for r in tx.connection.execute(sa.select(kpi_outcomes).where(
                    kpi_outcomes.c.version.is_(None)).order_by(kpi_outcomes.c.id))]

    def attach(self, tx: Transaction, joined: Sequence[tuple[int, str, str]]) -> set[int]:
        """Held outcomes now joined: (id, version, variant). Returns the ids this call joined:
        an outcome another writer joined meanwhile is left as it is (and not counted twice)."""
        done: set[int] = set()
        for i, v, var in joined:
            if tx.connection.execute(kpi_outcomes.update().where(
                    kpi_outcomes.c.id == i, kpi_outcomes.c.version.is_(None)).values(
                    version=v, variant=var)).rowcount:
                done.add(i)
        return done

    def drop(self, tx: Transaction, ids: Sequence[int]) -> None:
        for i in range(0, len(ids), CHUNK):
            tx.connection.execute(kpi_outcomes.delete().where(
                kpi_outcomes.c.id.in_(ids[i:i + CHUNK])))

    def add(self, tx: Transaction, sums: dict[StatKey, KpiSums], now: float) -> None:
        """Add ``sums`` to the stored ones (read, then update or insert, in ``tx``)."""
        conn = tx.connection
        for (model, version, variant, kpi), s in sums.items():
            where = (kpi_stats.c.model == model, kpi_stats.c.version == version,
                     kpi_stats.c.variant == variant, kpi_stats.c.kpi == kpi)
            if not conn.execute(kpi_stats.update().where(*where).values(
                    n=kpi_stats.c.n + s.n, total=kpi_stats.c.total + s.total,
                    total_sq=kpi_stats.c.total_sq + s.total_sq, updated_at=now)).rowcount:
                conn.execute(kpi_stats.insert().values(
                    model=model, version=version, variant=variant, kpi=kpi, n=s.n,
                    total=s.total, total_sq=s.total_sq, updated_at=now))

    def sums(self, model: str | None = None) -> dict[StatKey, KpiSums]:
        """Every stored sum (of ``model`` when given)."""
        q = sa.select(kpi_stats)
        if model is not None:
            q = q.where(kpi_stats.c.model == model)
        with self.engine.connect() as conn:
            return {(r.model, r.version, r.variant, r.kpi): KpiSums(r.n, r.total, r.total_sq)
                    for r in conn.execute(q)}

    def outcomes(self, model: str, since: float = 0.0) -> Iterable[dict[str, Any]]:
        """The joined outcomes of ``model`` received since ``since`` (for the export)."""
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(kpi_outcomes).where(
                    kpi_outcomes.c.model == model, kpi_outcomes.c.version.is_not(None),
                    kpi_outcomes.c.ts >= since).order_by(kpi_outcomes.c.id)):
                yield dict(r._mapping)

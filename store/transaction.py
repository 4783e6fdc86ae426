"""Transactions as the store's callers see them: a handle the repositories write in, so that
several writes of several repositories commit together or not at all.

The Monitor's exactly-once counting rests on this: a step's derived state (statistics, index
rows, label joins, drift state and alarms) and its log checkpoint go into one ``Transaction``.
Code outside store/ opens one with ``transaction(engine)``, hands it to repository methods and
never looks inside it; only the repositories reach its connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

# What the composition roots build with ``make_engine`` and hand down: named here so that a
# module outside store/ can annotate it without importing SQLAlchemy.
Engine = sa.Engine


class Transaction:
    """An open transaction (or a read snapshot, from ``reading``) on one connection."""

    __slots__ = ("connection",)

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection


@contextmanager
def transaction(engine: Engine) -> Iterator[Transaction]:
    """Begin a transaction: committed when the block ends, rolled back when it raises."""
    with engine.begin() as conn:
        yield Transaction(conn)


@contextmanager
def reading(engine: Engine) -> Iterator[Transaction]:
    """A connection for reads that must agree with each other (one snapshot); nothing
    written in it is committed."""
    with engine.connect() as conn:
        yield Transaction(conn)

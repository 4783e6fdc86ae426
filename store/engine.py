"""Engine construction and schema migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# a store locked past its busy timeout, or unreachable: the caller may retry (HTTP 503)
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def make_engine(url: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL mode and a busy timeout so workers can share it
    (a statement waits up to ``busy_timeout`` seconds for a lock, then fails)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout,
                                                "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                            pool_timeout=busy_timeout)


def _names_and_mark(conn: sa.Connection, table: sa.Table, columns: Sequence[str]
                    ) -> tuple[str, list[str], str]:
    """The quoted table and column names, and the driver's placeholder."""
    quote = conn.dialect.identifier_preparer
    mark = "?" if conn.dialect.paramstyle in ("qmark", "numeric") else "%s"
    return quote.format_table(table), [quote.quote(c) for c in columns], mark


def insert_rows(conn: sa.Connection, table: sa.Table, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert many positional rows with one driver ``executemany``.

    ``conn.execute(table.insert(), dicts)`` processes every row's parameters in Python; for
    the Monitor's prediction index that was a fifth of its CPU (py-spy). The statement here
    is built once per call with the driver's placeholder and the values go straight through.
    """
    if not rows:
        return
    name, names, mark = _names_and_mark(conn, table, columns)
    sql = f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, list(rows))


def put_rows(conn: sa.Connection, table: sa.Table, key: Sequence[str],
             columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write rows by their key: an UPDATE of each (key values first, then the other
    columns'), then one INSERT of those no row matched. Portable across SQLite and
    PostgreSQL, and with driver SQL built once per call, as ``insert_rows`` does: built as
    expressions, the Monitor's update-then-insert of its state was a fifth of its CPU at
    steps of 100 records (py-spy)."""
    if not rows:
        return
    width = len(key)
    name, names, mark = _names_and_mark(conn, table, [*key, *columns])
    sql = (f"UPDATE {name} SET {', '.join(f'{n} = {mark}' for n in names[width:])} "
           f"WHERE {' AND '.join(f'{n} = {mark}' for n in names[:width])}")
    missing = [row for row in rows
               if not conn.exec_driver_sql(sql, (*row[width:], *row[:width])).rowcount]
    insert_rows(conn, table, [*key, *columns], missing)


# pg_advisory_xact_lock's key for migrations: any fixed 64-bit number ("VIGILMIG")
MIGRATION_LOCK = 0x564947494C4D4947


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration (idempotent). On PostgreSQL one process at
    a time: replicas started together on an empty database would each create the tables,
    and all but one fail to start; the others wait here and find the schema at head."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

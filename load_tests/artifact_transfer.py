"""How fast a version's part goes into the shared store and back out, checked
(``store/artifacts.py``): one random part of ``--mib`` MiB shared and fetched on the store
at ``--url`` (a PostgreSQL URL; a private schema is made and dropped), or on a temporary
SQLite file without it. A benchmark for docs/architecture.md (Scale-out), not a test.

    python -m load_tests.artifact_transfer --mib 64 --url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from store import make_engine, migrate
from store.artifacts import ArtifactStore
from store.transaction import transaction


def measure(engine: sa.Engine, mib: int, work: Path) -> tuple[float, float]:
    """Seconds to share, then to fetch and verify, one part of ``mib`` MiB."""
    migrate(engine)
    (work / "model.onnx").write_bytes(os.urandom(mib * 1024 * 1024))
    store = ArtifactStore(engine, max_part_bytes=(mib + 1) * 1024 * 1024)
    start = time.perf_counter()
    with transaction(engine) as tx:
        store.share(tx, "m", "v1", "digest", {"model.onnx": work / "model.onnx"}, "bench")
    shared = time.perf_counter() - start
    (work / "out").mkdir()
    start = time.perf_counter()
    store.fetch("m", "v1", work / "out")
    return shared, time.perf_counter() - start


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--mib", type=int, default=64)
    args.add_argument("--url", default=None, help="PostgreSQL URL (default: SQLite)")
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if opts.url is None:
            engine, kind = make_engine(f"sqlite:///{work / 'vigil.db'}"), "SQLite"
            shared, fetched = measure(engine, opts.mib, work)
        else:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(opts.url)
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            engine = sa.create_engine(opts.url,
                                      connect_args={"options": f"-csearch_path={schema}"})
            kind = "PostgreSQL"
            try:
                shared, fetched = measure(engine, opts.mib, work)
            finally:
                engine.dispose()
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
        engine.dispose()
    print(f"{opts.mib} MiB part on {kind}: shared in {shared:.2f} s "
          f"({opts.mib / shared:.0f} MiB/s), fetched and verified in {fetched:.2f} s "
          f"({opts.mib / fetched:.0f} MiB/s)")


if __name__ == "__main__":
    main()

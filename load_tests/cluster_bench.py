"""The prediction log on NATS JetStream in ``make bench`` (issue 24, Performance), each number
against its baseline measured in the same run:

- **one replica, ``log.backend: nats`` against ``local``**: two Vigils side by side with the
  demo deployment, 2 workers each, both stores on PostgreSQL (a schema each), so the log's
  backend is the only difference; A/B alternating rounds at 16 connections, req/s and
  p50 / p99 / p99.9, and the spread of the rounds' req/s ratios (target: nats ≥ 0.90×);
- **3 replicas against 1**: the nats Vigil and two more replicas on its schema and stream
  (``r1``–``r3``; the two pull the demo versions from the shared store); one hey on
  ``r1`` alone, then one hey per replica at once (16 connections each), alternating; the
  aggregate req/s, and per core;
- **the Monitor's events/s from NATS**: ``load_tests.monitor_bench``'s demo-shaped records
  published by the real publisher, then consumed by a replica's Monitor (leases, fenced
  commits, event-id de-duplication), against the local Monitor on the same records from
  segments, both on PostgreSQL.

Needs PostgreSQL (``VIGIL_STORE__URL``, else ``VIGIL_TEST_POSTGRES_URL``: a
``postgresql+psycopg://`` URL) and NATS with JetStream (``VIGIL_LOG__NATS__URL``, default
``nats://127.0.0.1:4222``); without either the section is one line saying which is missing.
Each run makes its own schemas and streams and drops them after. Alone:
``python -m load_tests.cluster_bench [--rounds 3] [--seconds 5]`` (prints the section).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.kinds import ROUTES, Servers, hey_with_cpu, start_all, stop_all  # noqa: E402
from load_tests.loadgen import hey  # noqa: E402
from load_tests.probes import gauge, quiesce  # noqa: E402

NAMES = ("log.backend: nats against local", "3 replicas against 1",
         "the Monitor's events/s from NATS")
NATS_DEFAULT = "nats://127.0.0.1:4222"
MONITOR_REQUESTS = 10_000  # 2.5 records each: ~25k records per backend


def wanted(only: str | None) -> bool:
    """Whether ``--only`` selects this section."""
    return not only or any(only in name for name in NAMES)


class Backends:
    """The machine's PostgreSQL and NATS, and the schemas and streams a run made on them
    (``close`` drops them)."""

    def __init__(self, postgres: str, nats: str) -> None:
        import sqlalchemy as sa

        self.postgres, self.nats = postgres, nats
        self._admin = sa.create_engine(postgres)
        self._schemas: list[str] = []
        self._streams: list[str] = []

    def store_url(self) -> str:
        """A fresh schema's URL (``search_path`` set through libpq's options)."""
        import sqlalchemy as sa

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with self._admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        self._schemas.append(schema)
        sep = "&" if "?" in self.postgres else "?"
        return f"{self.postgres}{sep}options=-csearch_path%3D{schema}"

    def stream(self) -> str:
        name = "BENCH" + uuid.uuid4().hex[:10].upper()
        self._streams.append(name)
        return name

    def replica_env(self, store_url: str, stream: str, replica: str) -> dict[str, str]:
        return {"VIGIL_STORE__URL": store_url, "VIGIL_LOG__BACKEND": "nats",
                "VIGIL_LOG__NATS__URL": self.nats, "VIGIL_LOG__NATS__STREAM": stream,
                "VIGIL_SERVER__REPLICA_ID": replica}

    def close(self) -> None:
        import sqlalchemy as sa

        from monitoring.log.jetstream import StreamSpec, connect

        async def drop() -> None:
            nc = await connect(StreamSpec(url=self.nats), reconnect=False)
            js = nc.jetstream()
            for name in self._streams:
                with contextlib.suppress(Exception):  # never created (a start failed)
                    await js.delete_stream(name)
            await nc.close()

        asyncio.run(drop())
        with self._admin.begin() as conn:
            for schema in self._schemas:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        self._admin.dispose()


def backends() -> Backends | str:
    """The machine's PostgreSQL and NATS, or one line saying which is missing."""
    postgres = next((u for u in (os.environ.get("VIGIL_STORE__URL", ""),
                                 os.environ.get("VIGIL_TEST_POSTGRES_URL", ""))
                     if u.startswith("postgresql")), None)
    if postgres is None:
        return ("no PostgreSQL: set VIGIL_STORE__URL (or VIGIL_TEST_POSTGRES_URL) to a "
                "postgresql+psycopg:// URL")
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(postgres, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    nats = os.environ.get("VIGIL_LOG__NATS__URL", NATS_DEFAULT)
    from monitoring.log.jetstream import StreamSpec, connect

    async def probe() -> None:
        nc = await connect(StreamSpec(url=nats, timeout=2), reconnect=False)
        await nc.jetstream().account_info()  # JetStream enabled, not only NATS
        await nc.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"no NATS with JetStream at {nats} ({type(exc).__name__}; nats-server -js)"
    return Backends(postgres, nats)


@contextlib.contextmanager
def backends_for(kinds: list[str]) -> Iterator[dict[str, dict[str, str]]]:
    """The environment of the cluster kinds among ``kinds`` (``vigil-pg``: a schema of its
    own; ``vigil-nats``: a schema and a stream, replica ``r1``), dropped after."""
    if not {"vigil-pg", "vigil-nats"} & set(kinds):
        yield {}
        return
    b = backends()
    if isinstance(b, str):
        raise RuntimeError(b)
    try:
        yield {"vigil-pg": {"VIGIL_STORE__URL": b.store_url()},
               "vigil-nats": b.replica_env(b.store_url(), b.stream(), "r1")}
    finally:
        b.close()


def section(rounds: int, seconds: float, workers: int = 2, connections: int = 16
            ) -> list[str]:
    """The Markdown of the three measurements (the module's docstring)."""
    head = ["## The prediction log on NATS JetStream", ""]
    b = backends()
    if isinstance(b, str):
        print(f"nats rows skipped: {b}", flush=True)
        return [*head, f"Skipped: {b}.", ""]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = [*head, *against_local(b, Path(tmp), rounds, seconds, workers, connections)]
        rates = monitor_rates(b)
        print("\n".join(rates.table()), flush=True)
        out += rates.table()
    finally:
        b.close()
    return out


def against_local(b: Backends, home: Path, rounds: int, seconds: float, workers: int,
                  connections: int) -> list[str]:
    """One replica on nats against local, then 3 replicas against 1 (the nats Vigil is r1)."""
    store, stream = b.store_url(), b.stream()
    servers = start_all(["vigil-pg", "vigil-nats"], workers, home, {
        "vigil-pg": {"VIGIL_STORE__URL": b.store_url()},
        "vigil-nats": b.replica_env(store, stream, "r1")})
    body = ROUTES["vigil"][2]
    try:
        for _, url in servers.values():
            hey(url + "/predict", body, 2, connections)
        runs: dict[str, list[dict[str, float]]] = {"vigil-pg": [], "vigil-nats": []}
        for _ in range(2 * rounds):  # finer alternation, as the parts' cells
            for kind in runs:
                quiesce(servers)
                runs[kind].append(hey_with_cpu(servers[kind][0], servers[kind][1] + "/predict",
                                               body, seconds / 2, connections))
        rows = backend_rows(runs, workers, connections)
        notes = [health_line("local", servers["vigil-pg"][1]),
                 health_line("nats", servers["vigil-nats"][1])]
        stop_all({"vigil-pg": servers.pop("vigil-pg")})
        servers.update(start_all(["r2", "r3"], workers, home, {
            n: b.replica_env(store, stream, n) for n in ("r2", "r3")},
            kind_of={"r2": "vigil-nats", "r3": "vigil-nats"}))
        servers["r1"] = servers.pop("vigil-nats")
        scale = replica_rows(servers, rounds, seconds, workers, connections)
        notes += [health_line(f"replica {n}", servers[n][1]) for n in ("r1", "r2", "r3")]
    finally:
        stop_all(servers)
    return [
        f"One replica ({workers} workers, the demo deployment with everything on, the store "
        f"on PostgreSQL) with `log.backend: local` against `nats` (the machine's NATS, a "
        f"stream of its own, 8 partitions), A/B alternating over {2 * rounds} rounds of "
        f"{seconds / 2:g} s at {connections} connections; medians, and the lowest and "
        "highest of the rounds' req/s ratios (each round's two runs back to back), and "
        "the workers' CPU a request (steadier than req/s on a shared machine). "
        "Target: nats ≥ 0.90× local.", "",
        "| workers | connections | log.backend | req/s | latency p50 / p99 / p99.9 (ms) "
        "| req/s ratio (rounds' range) | p99 ratio | workers' cpu ms/req | non-200 |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"{len(servers)} replicas of the nats Vigil (one schema, one stream; {workers} "
        f"workers and a Monitor each) against replica r1 alone while the other two idle: "
        f"one hey per replica at {connections} connections, all at once, {rounds} rounds of "
        f"{seconds:g} s alternating. All on this machine's {os.cpu_count()} cores, with "
        "PostgreSQL, NATS and the hey processes: on 2 cores this measures contention, not "
        "scale-out.", "",
        "| replicas | connections | req/s (aggregate) | per core | worst replica's p99 (ms) "
        "| ratio to 1 replica | non-200 |", "|---|---|---|---|---|---|---|", *scale, "",
        *[f"- {n}" for n in notes], ""]


def backend_rows(runs: dict[str, list[dict[str, float]]], workers: int, connections: int
                 ) -> list[str]:
    """The local row and the nats row: medians over the rounds, the nats row's ratios to
    local, with the lowest and highest round's req/s ratio."""
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    ratios = [n["rps"] / lo["rps"] for lo, n in zip(runs["vigil-pg"], runs["vigil-nats"],
                                                     strict=True)]
    base = med["vigil-pg"]
    rows = []
    for kind, name in (("vigil-pg", "local"), ("vigil-nats", "nats")):
        m = med[kind]
        first = kind == "vigil-pg"
        ratio = "1" if first else (f"**{m['rps'] / base['rps']:.2f}** "
                                   f"({min(ratios):.2f}–{max(ratios):.2f})")
        p99 = "1" if first else f"{m['p99'] / base['p99']:.2f}"
        cpu = f"{m['cpu_ms']:.3f}" + ("" if first else f" ({m['cpu_ms'] / base['cpu_ms']:.2f}×)")
        rows.append(f"| {workers} | {connections} | {name} | {m['rps']:,.0f} req/s | "
                    f"{m['p50']:.1f} / {m['p99']:.1f} / {m['p99.9']:.1f} | {ratio} | {p99} | "
                    f"{cpu} | {sum(r['non_200'] for r in runs[kind]):.0f} |")
        print(rows[-1], flush=True)
    return rows


def replica_rows(servers: Servers, rounds: int, seconds: float, workers: int,
                 connections: int) -> list[str]:
    body = ROUTES["vigil"][2]
    names = sorted(servers)
    for n in names[1:]:  # warm the new replicas up
        hey(servers[n][1] + "/predict", body, 2, connections)
    one: list[list[dict[str, float]]] = []
    every: list[list[dict[str, float]]] = []
    with ThreadPoolExecutor(len(names)) as pool:
        for _ in range(rounds):
            quiesce(servers)
            one.append([hey(servers[names[0]][1] + "/predict", body, seconds, connections)])
            quiesce(servers)
            every.append(list(pool.map(lambda n: hey(servers[n][1] + "/predict", body,
                                                     seconds, connections), names)))
    cores = os.cpu_count() or 1
    base = statistics.median(sum(r["rps"] for r in rnd) for rnd in one)
    rows = []
    for runs in (one, every):
        total = statistics.median(sum(r["rps"] for r in rnd) for rnd in runs)
        rows.append(f"| {len(runs[0])} | {connections * len(runs[0])} | {total:,.0f} req/s | "
                    f"{total / cores:,.0f} req/s | "
                    f"{statistics.median(max(r['p99'] for r in rnd) for rnd in runs):.1f} | "
                    f"**{total / base:.2f}** | "
                    f"{sum(r['non_200'] for rnd in runs for r in rnd):.0f} |")
        print(rows[-1], flush=True)
    return rows


def health_line(name: str, url: str) -> str:
    """A Vigil's Monitor lag, log drops, spills and forwards after its runs (``/metrics``)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return (f"{name}: Monitor lag {gauge(text, 'vigil_monitor_lag_events'):.0f} events right after "
            f"the last run, {gauge(text, 'vigil_prediction_log_dropped_total'):.0f} log records "
            f"dropped, {gauge(text, 'vigil_prediction_log_spilled_total'):.0f} spilled, "
            f"{gauge(text, 'vigil_prediction_log_forwarded_total'):.0f} forwarded")


@dataclass
class MonitorRates:
    """Records written to each log, consumed by its Monitor, in seconds; spilled on NATS."""

    requests: int
    local: tuple[int, int, float]
    nats: tuple[int, int, float]
    spilled: int

    def table(self) -> list[str]:
        (lw, lc, lt), (nw, nc, nt) = self.local, self.nats
        rows = [f"| local segments | {lw:,} | {lc:,} | {lc / lt:,.0f} | 1 |",
                f"| NATS (the model's partition, 1 of 8) | {nw:,} | {nc:,} | {nc / nt:,.0f} | "
                f"**{(nc / nt) / (lc / lt):.2f}** |"]
        return [
            f"The Monitor's events/s (`load_tests.monitor_bench`'s records: {self.requests:,} "
            "predictions, each with a shadow's answer, and labels for half; drift off, the "
            "store on PostgreSQL): read from local segments by the one-machine Monitor, and "
            "from NATS by a replica's Monitor (leases, fenced commits, event ids recorded and "
            f"checked), over the stream two real publishers wrote ({self.spilled} spilled).",
            "", "| read from | records | consumed | events/s | ratio |",
            "|---|---|---|---|---|", *rows, ""]


def monitor_rates(b: Backends, requests: int = MONITOR_REQUESTS) -> MonitorRates:
    """The Monitor's events/s: the same records from NATS and from local segments."""
    from load_tests.monitor_bench import LABELS, consume_nats, nats_monitor, publish_log, write_log
    from monitoring.log.jetstream import StreamSpec
    from monitoring.log.reader import LocalEventLog
    from monitoring.monitor import Monitor
    from store import make_engine, migrate

    with tempfile.TemporaryDirectory() as tmp:
        spec = StreamSpec(url=b.nats, name=b.stream())
        published, spilled = publish_log(spec, Path(tmp) / "spill", requests, 0.5, 2)
        engine = make_engine(b.store_url())
        migrate(engine)
        loop, owner = nats_monitor(engine, spec, 20_000, drift=False)
        try:
            n, seconds = consume_nats(loop, owner, published)
            nats = (published, n, seconds)
        finally:
            loop.log.close()  # type: ignore[attr-defined]
            engine.dispose()
        written = write_log(Path(tmp) / "log", requests, 0.5, 2)
        engine = make_engine(b.store_url())
        migrate(engine)
        local = Monitor(engine, LocalEventLog(Path(tmp) / "log"), batch_events=20_000,
                        class_labels_of=lambda m, v: LABELS)
        local.load()
        t0 = time.perf_counter()
        consumed = local.tick(budget_seconds=3600).lines
        elapsed = time.perf_counter() - t0
        engine.dispose()
        return MonitorRates(requests, (written, consumed, elapsed), nats, spilled)


def main() -> None:
    parser = argparse.ArgumentParser(description="The nats rows of make bench, alone.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print("\n".join(section(args.rounds, args.seconds, workers=args.workers)))


if __name__ == "__main__":
    main()

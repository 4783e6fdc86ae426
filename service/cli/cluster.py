"""``vigil cluster``: the replicas and who holds each partition of the log, with its lag."""

from __future__ import annotations

import time

import typer

from service.cli.common import JsonFlag, call, ctx_of, emit, out, run, table

commands = typer.Typer()


def _ago(ts: float | None) -> str:
    return "-" if ts is None else f"{time.time() - ts:.1f} s ago"


@commands.command()
def cluster(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """The replicas seen, and each partition's owner, generation, lease and lag."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        data = call(c, "GET", "/admin/cluster").json()

        def human() -> None:
            r = table("replica", "url", "last seen", "monitor pid")
            for x in data["replicas"]:
                r.add_row(x["id"], x["url"], _ago(x["last_seen"]), str(x["monitor_pid"]))
            out.print(r)
            p = table("partition", "owner", "generation", "lease expires", "lag events",
                      "lag seconds")
            now = time.time()
            for x in data["partitions"]:
                expires = x["lease_expires_at"]
                p.add_row(str(x["partition"]), x["owner"] or "-", str(x["generation"] or "-"),
                          "-" if expires is None else f"in {expires - now:.1f} s",
                          str(x["lag_events"] if x["lag_events"] is not None else "-"),
                          "-" if x["lag_seconds"] is None else f"{x['lag_seconds']:.1f}")
            out.print(p)
        emit(c, data, human)
    run(body)

"""``vigil status``: every model in one table (who serves, traffic, errors, drift, quality).

A top-level command: ``commands`` has no name and the root merges it (``add_typer``).
"""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from service.cli.common import JsonFlag, call, ctx_of, emit, out, pct, run, table

commands = typer.Typer()


@commands.command()
def status(ctx: typer.Context,
        json_out: JsonFlag = False) -> None:
    """Every model: who serves (with a running experiment's arms), traffic, errors, drift
    and quality."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        deployments = call(c, "GET", "/admin/deployments").json()["deployments"]
        pending = call(c, "GET", "/admin/webhooks/deliveries",
                       params={"status": "pending", "limit": 1000}).json()["items"]
        rows = []
        monitor: dict[str, Any] = {}
        for d in deployments:
            m = d["model"]
            stats = call(c, "GET", f"/admin/models/{m}/stats").json()
            drift = call(c, "GET", f"/admin/drift/{m}").json()
            monitor = stats["monitor"]
            champ = stats["versions"].get(d["champion"]["version"], {}).get("champion", {})
            quality = champ.get("quality", {}).get("window", {})
            rows.append({
                "model": m, "revision": d["revision"], "champion": d["champion"]["version"],
                "canary": d.get("canary"), "shadows": d.get("shadows", []),
                "experiment": (d.get("experiment") or {}).get("arms"),
                "requests": {f"{v}/{var}": r["requests"] for v, x in stats["versions"].items()
                             for var, r in x.items()},
                "champion_error_rate": champ.get("error_rate"),
                "champion_latency_p99_seconds": champ.get("latency_seconds", {}).get("p99"),
                "quality_window": quality,
                "drift_active_alarms": [{"signal": a["signal"], "feature":
                                         a["features"][0].get("feature")}
                                        for a in drift["active_alarms"]],
                "monitor_lag_seconds": stats["monitor"].get("lag_seconds"),
                "webhooks_pending": sum(1 for w in pending if w["model"] == m)})

        def human() -> None:
            t = status_table(rows)
            out.print(t)
            waiting = sum(r["webhooks_pending"] for r in rows)
            if waiting:
                out.print(f"[yellow]{waiting} retraining webhook(s) pending[/yellow]")
            for line in replica_lines(monitor, time.time()):
                out.print(line, highlight=False)
        emit(c, {"models": rows, **({"monitor_replicas": monitor["replicas"]}
                                    if "replicas" in monitor else {})}, human)
    run(body)


def replica_lines(monitor: dict[str, Any], now: float) -> list[str]:
    """With several replicas, each one's Monitor: its lag and how long ago it last ticked
    (a stale one flagged); nothing on one machine."""
    lines = []
    for r in monitor.get("replicas", []):
        ago = now - (r.get("updated_at") or 0.0)
        lines.append(f"Monitor {r['replica']}: lag {r.get('lag_events') or 0} events, "
                     f"{r.get('lag_seconds') or 0.0:.1f} s; last tick {ago:.1f} s ago"
                     + (" [red](stale: left out of the merged lag)[/red]"
                        if r.get("stale") else ""))
    return lines


def status_table(rows: list[dict[str, Any]]) -> Table:
    """One row a model that fits 80 columns: what serves is one cell of a line a variant,
    and the quality and drift cells wrap inside their columns; names and numbers never
    wrap and are never cut short. ``req`` counts the requests answered (champion, canary,
    explicit versions), not a shadow's answers to them."""
    t = table("model", "rev", "serving", "req", "err", "p99", "quality", "drift",
              title="Vigil status")
    for col in t.columns:
        wraps = col.header in ("quality", "drift")
        col.no_wrap, col.min_width = not wraps, 8 if wraps else None
    for r in rows:
        can = r["canary"]
        serving = [r["champion"]]
        serving += [f"experiment {v} {w:.0%}" for v, w in (r.get("experiment") or {}).items()]
        if can:
            serving.append(f"canary {can['version']} {can['weight']:.0%}")
        serving += [f"shadow {s['version']}" for s in r["shadows"]]
        q = r["quality_window"]
        qtxt = (f"acc {pct(q['accuracy'])} ({q['labels']})" if "accuracy" in q else
                f"mae {q['mae']:.3g} ({q['labels']})" if "mae" in q else "—")
        p99 = r["champion_latency_p99_seconds"]
        t.add_row(
            r["model"], str(r["revision"]), "\n".join(serving),
            str(sum(n for k, n in r["requests"].items() if not k.endswith("/shadow"))),
            pct(r["champion_error_rate"]),
            "—" if p99 is None else f"{p99 * 1000:.1f}ms", qtxt,
            ", ".join(f"[red]{a['signal']}[/red] {a['feature']}"
                      for a in r["drift_active_alarms"]) or "[green]ok[/green]")
    return t

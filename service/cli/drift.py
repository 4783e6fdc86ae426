"""``vigil drift``: a version's drift signals and alarms, acknowledging them, rebaselining.

``app`` is the ``drift`` group; the root (``service.cli``) joins it with ``add_typer``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.common import JsonFlag, call, ctx_of, emit, out, run, table

app = typer.Typer(help="Drift state, acknowledgement, rebaseline.", no_args_is_help=True)


def _version_q(version: str | None) -> dict[str, str]:
    return {"version": version} if version else {}


@app.command("show")
def drift_show(ctx: typer.Context, model: str,
               version: Annotated[str | None, typer.Option()] = None,
        json_out: JsonFlag = False) -> None:
    """Signals, PSI per feature and alarms of a version (default: the champion)."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        d = call(c, "GET", f"/admin/drift/{model}", params=_version_q(version)).json()

        def human() -> None:
            ref = d.get("reference") or {}
            out.print(f"[bold]{model}:{d['version']}[/bold]  {d['rows_seen']} rows, "
                      f"{d['labels_seen']} labels; reference: {ref.get('source', 'none yet')}"
                      f", {ref.get('rows', 0)} rows")
            t = table("signal", "max statistic/threshold", "top features", "alarm")
            for signal, s in d["signals"].items():
                top = ", ".join(f"{k} {v:.2f}" for k, v in list(s["features"].items())[:3])
                if s.get("pairs"):  # input_joint: the pairs whose correlation moved most
                    top = ", ".join(f"{p['feature']} {p['corr_reference']:+.2f}→"
                                    f"{p['corr_live']:+.2f}" for p in s["pairs"][:3])
                t.add_row(signal, f"{s['max_ratio']:.2f}", top,
                          "[red]open[/red]" if s["alarm_active"] else "—")
            out.print(t)
            psi = sorted(d["psi"].items(), key=lambda kv: -kv[1])[:5]
            out.print("PSI  " + (", ".join(f"{k} {v:.3f}" for k, v in psi)
                                 or "— (no live rows yet)"))
        emit(c, d, human)
    run(body)


@app.command("ack")
def drift_ack(ctx: typer.Context, model: str,
              version: Annotated[str | None, typer.Option()] = None,
              signal: Annotated[str | None, typer.Option()] = None,
        json_out: JsonFlag = False) -> None:
    """Acknowledge open alarms."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        params = {**_version_q(version), **({"signal": signal} if signal else {})}
        d = call(c, "POST", f"/admin/drift/{model}/ack", params=params).json()
        emit(c, d, lambda: out.print(f"acknowledged {len(d['acknowledged'])} alarm(s) of "
                                     f"{model}:{d['version']}"))
    run(body)


@app.command("rebaseline")
def drift_rebaseline(ctx: typer.Context, model: str,
                     version: Annotated[str | None, typer.Option()] = None,
                     rows: Annotated[int | None, typer.Option()] = None,
        json_out: JsonFlag = False) -> None:
    """Adopt the last N live rows as the version's reference."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        params = {**_version_q(version), **({"rows": str(rows)} if rows else {})}
        d = call(c, "POST", f"/admin/drift/{model}/rebaseline", params=params).json()
        emit(c, d, lambda: out.print(f"rebaseline of {model}:{d['version']} queued "
                                     f"({d['rows']} rows, request {d['request']})"))
    run(body)

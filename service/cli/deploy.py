"""``vigil deploy`` (canary, clear-canary, shadow) and the top-level ``vigil promote`` and
``vigil rollback``: change who serves, through the admin API's deployment endpoints.

``app`` is the ``deploy`` group; ``commands`` holds the two top-level commands (no name: the
root merges it).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli.common import Ctx, JsonFlag, call, ctx_of, emit, out, pct, run

app = typer.Typer(help="Change who serves: canary, shadows.", no_args_is_help=True)
commands = typer.Typer()


def patch(c: Ctx, model: str, doc: dict[str, Any]) -> dict[str, Any]:
    current = call(c, "GET", f"/admin/deployments/{model}")
    etag = current.headers.get("etag") or f'"{current.json()["revision"]}"'
    r = call(c, "PATCH", f"/admin/deployments/{model}", content=json.dumps(doc),
             headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"})
    return r.json()


def show_deployment(c: Ctx, d: dict[str, Any], verb: str) -> None:
    def human() -> None:
        can = d.get("canary")
        out.print(f"{verb} [bold]{d['model']}[/bold] revision {d['revision']}: champion "
                  f"{d['champion']['version']}"
                  + (f", canary {can['version']} at {pct(can['weight'])}" if can else "")
                  + (", shadows " + ", ".join(s["version"] for s in d["shadows"])
                     if d.get("shadows") else ""))
    emit(c, d, human)


@app.command("canary")
def deploy_canary(ctx: typer.Context, model: str, version: str,
                  weight: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
        json_out: JsonFlag = False) -> None:
    """Start (or re-weight) a canary."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(c, patch(c, model, {"canary": {"version": version,
                                                               "weight": weight}}), "updated"))


@app.command("clear-canary")
def deploy_clear_canary(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Stop the canary: all traffic to the champion."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(c, patch(c, model, {"canary": None}), "updated"))


@app.command("shadow")
def deploy_shadow(ctx: typer.Context, model: str, version: str,
                  sample_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
                  remove: Annotated[bool, typer.Option("--remove")] = False,
        json_out: JsonFlag = False) -> None:
    """Add (or with --remove, drop) a shadow version."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        current = call(c, "GET", f"/admin/deployments/{model}").json()
        shadows = [s for s in current.get("shadows", []) if s["version"] != version]
        if not remove:
            shadows.append({"version": version, "sample_rate": sample_rate})
        show_deployment(c, patch(c, model, {"shadows": shadows}), "updated")
    run(body)


@commands.command()
def promote(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Make the canary the champion."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(
        c, call(c, "POST", f"/admin/deployments/{model}/promote").json(), "promoted"))


@commands.command()
def rollback(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Bring the previous champion back (the canary is cleared)."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(
        c, call(c, "POST", f"/admin/deployments/{model}/rollback").json(), "rolled back"))

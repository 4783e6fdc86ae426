"""``vigil audit``: the newest rows of the audit log (a top-level command; the root merges
``commands``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.common import JsonFlag, call, ctx_of, emit, out, run, table

commands = typer.Typer()


@commands.command()
def audit(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
          action: Annotated[str | None, typer.Option()] = None,
        json_out: JsonFlag = False) -> None:
    """The newest audit rows."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        params: dict[str, Any] = {"limit": limit, **({"action": action} if action else {})}
        d = call(c, "GET", "/admin/audit", params=params).json()

        def human() -> None:
            t = table("time (UTC)", "actor", "role", "action", "target", "outcome")
            for i in d["items"]:
                colour = "green" if i["outcome"] == "ok" else "red"
                when = i["time"][:19].replace("T", " ")  # to the second; --json has it all
                t.add_row(when, i["actor"], i.get("role") or "", i["action"], i["target"],
                          f"[{colour}]{i['outcome']}[/{colour}]")
            out.print(t)
        emit(c, d, human)
    run(body)

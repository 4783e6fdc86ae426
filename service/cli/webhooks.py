"""``vigil webhooks`` (list, redeliver, test) and the top-level ``vigil retrain``: the
retraining webhooks' deliveries, and firing one by hand.

``app`` is the ``webhooks`` group; ``commands`` holds ``retrain`` (no name: the root merges
it).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.common import JsonFlag, call, ctx_of, emit, out, run, table

app = typer.Typer(help="Retraining webhook deliveries.", no_args_is_help=True)
commands = typer.Typer()


@app.command("list")
def webhooks_list(ctx: typer.Context,
                  status: Annotated[str | None, typer.Option(
                      help="pending | delivered | failed | dead")] = None,
                  limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
                  json_out: JsonFlag = False) -> None:
    """Deliveries, newest first, with their attempts."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        d = call(c, "GET", "/admin/webhooks/deliveries", params=params).json()

        def human() -> None:
            t = table("id", "event", "target", "status", "attempts", "last")
            for i in d["items"]:
                colour = {"delivered": "green", "dead": "red"}.get(i["status"], "yellow")
                t.add_row(str(i["id"]), i["event_id"], i["target"],
                          f"[{colour}]{i['status']}[/{colour}]", str(i["attempts"]),
                          i["last_error"] or str(i["last_status"] or ""))
            out.print(t)
        emit(c, d, human)
    run(body)


@app.command("redeliver")
def webhooks_redeliver(ctx: typer.Context, delivery_id: int,
                       json_out: JsonFlag = False) -> None:
    """Queue a delivery (a dead letter, say) for a new round of attempts."""
    c = ctx_of(ctx, json_out)
    run(lambda: emit(c, call(c, "POST", f"/admin/webhooks/deliveries/{delivery_id}/redeliver"
                             ).json(), lambda: out.print(f"delivery {delivery_id} queued")))


@app.command("test")
def webhooks_test(ctx: typer.Context, target: str, json_out: JsonFlag = False) -> None:
    """Send a signed vigil.test event to one target."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        d = call(c, "POST", f"/admin/webhooks/{target}/test").json()
        emit(c, d, lambda: out.print(f"test event {d['event_id']} queued for {target}"))
    run(body)


@commands.command()
def retrain(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
    """Fire the retraining webhook for a model by hand."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        d = call(c, "POST", f"/admin/models/{model}/retrain").json()
        emit(c, d, lambda: out.print(f"retraining event {d['event_id']} queued for "
                                     f"{', '.join(d['targets']) or 'no target'}"))
    run(body)

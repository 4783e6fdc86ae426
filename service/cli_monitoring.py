"""``vigil`` commands for what the Monitor does: drift, rollouts, retraining webhooks.

Registered on ``service.cli``'s apps (imported at the end of that module), beside the core
model, deployment and audit commands; exit codes and output are the core's.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli import (
    EXIT_INVALID,
    Ctx,
    Failed,
    JsonFlag,
    app,
    call,
    ctx_of,
    drift_app,
    emit,
    out,
    rollout_app,
    run,
    table,
    webhooks_app,
)

# ----------------------------------------------------------------------------- drift


def _version_q(version: str | None) -> dict[str, str]:
    return {"version": version} if version else {}


@drift_app.command("show")
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
                t.add_row(signal, f"{s['max_ratio']:.2f}", top,
                          "[red]open[/red]" if s["alarm_active"] else "—")
            out.print(t)
            psi = sorted(d["psi"].items(), key=lambda kv: -kv[1])[:5]
            out.print("PSI  " + (", ".join(f"{k} {v:.3f}" for k, v in psi)
                                 or "— (no live rows yet)"))
        emit(c, d, human)
    run(body)


@drift_app.command("ack")
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


@drift_app.command("rebaseline")
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


# ----------------------------------------------------------------------------- rollouts


def show_rollout(c: Ctx, d: dict[str, Any]) -> None:
    def human() -> None:
        spec, state = d["spec"], d["state"]
        steps = " → ".join(f"{w:.0%}" for w in spec["steps"])
        colour = {"promoted": "green", "aborted": "red", "paused": "yellow"}.get(
            state["status"], "cyan")
        out.print(f"rollout of [bold]{spec['candidate']}[/bold]: [{colour}]{state['status']}"
                  f"[/{colour}] at step {state['step'] + 1} ({steps})"
                  + (f" — {state['reason']}" if state.get("reason") else ""))
        analysis = d.get("analysis")
        if analysis:
            t = table("gate", "verdict", "value", "threshold", "samples")
            for g in analysis["gates"]:
                t.add_row(g["name"], g["verdict"], "—" if g["value"] is None else
                          f"{g['value']:.4g}", "—" if g["threshold"] is None else
                          f"{g['threshold']:.4g}", str(g["samples"]))
            out.print(t)
    emit(c, d, human)


@rollout_app.command("start")
def rollout_start(ctx: typer.Context, model: str, candidate: str,
                  steps: Annotated[str, typer.Option(help="weights, comma-separated")] =
                  "0.05,0.25,0.5,1.0",
                  min_seconds: Annotated[float, typer.Option()] = 60.0,
                  min_requests: Annotated[int, typer.Option()] = 200,
                  max_wait_seconds: Annotated[float, typer.Option()] = 600.0,
                  require_labels: Annotated[bool, typer.Option()] = False,
                  json_out: JsonFlag = False) -> None:
    """Start a rollout of CANDIDATE: it walks the steps on evidence."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        try:
            weights = [float(w) for w in steps.split(",")]
        except ValueError:
            raise Failed(EXIT_INVALID, f"--steps {steps!r}: comma-separated numbers") from None
        spec = {"candidate": candidate, "steps": weights, "min_seconds": min_seconds,
                "min_requests": min_requests, "max_wait_seconds": max_wait_seconds,
                "require_labels": require_labels}
        show_rollout(c, call(c, "POST", f"/admin/rollouts/{model}", json=spec).json())
    run(body)


@rollout_app.command("status")
def rollout_status(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
    """The rollout's step, state, and each gate's value, threshold and sample."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_rollout(c, call(c, "GET", f"/admin/rollouts/{model}").json()))


def _rollout_command(command: str) -> Any:
    def command_fn(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
        c = ctx_of(ctx, json_out)
        run(lambda: show_rollout(c, call(c, "POST", f"/admin/rollouts/{model}/{command}"
                                         ).json()))
    command_fn.__doc__ = {"pause": "Hold the rollout at its step.",
                          "resume": "Carry on from the step, with a fresh window.",
                          "abort": "Stop: canary cleared, champion untouched.",
                          "advance": "Skip to the next step (or promote)."}[command]
    return command_fn


for _name in ("pause", "resume", "abort", "advance"):
    rollout_app.command(_name)(_rollout_command(_name))


# ----------------------------------------------------------------------------- webhooks


@webhooks_app.command("list")
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


@webhooks_app.command("redeliver")
def webhooks_redeliver(ctx: typer.Context, delivery_id: int,
                       json_out: JsonFlag = False) -> None:
    """Queue a delivery (a dead letter, say) for a new round of attempts."""
    c = ctx_of(ctx, json_out)
    run(lambda: emit(c, call(c, "POST", f"/admin/webhooks/deliveries/{delivery_id}/redeliver"
                             ).json(), lambda: out.print(f"delivery {delivery_id} queued")))


@webhooks_app.command("test")
def webhooks_test(ctx: typer.Context, target: str, json_out: JsonFlag = False) -> None:
    """Send a signed vigil.test event to one target."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        d = call(c, "POST", f"/admin/webhooks/{target}/test").json()
        emit(c, d, lambda: out.print(f"test event {d['event_id']} queued for {target}"))
    run(body)


@app.command()
def retrain(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
    """Fire the retraining webhook for a model by hand."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        d = call(c, "POST", f"/admin/models/{model}/retrain").json()
        emit(c, d, lambda: out.print(f"retraining event {d['event_id']} queued for "
                                     f"{', '.join(d['targets']) or 'no target'}"))
    run(body)

"""``vigil rollout``: start a progressive rollout, see its gates, pause, resume, abort or
advance it.

``app`` is the ``rollout`` group; the root (``service.cli``) joins it with ``add_typer``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.common import (
    EXIT_INVALID,
    Ctx,
    Failed,
    JsonFlag,
    call,
    ctx_of,
    emit,
    out,
    run,
    table,
)

app = typer.Typer(help="Progressive delivery: canary analysis by steps.", no_args_is_help=True)


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


@app.command("start")
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


@app.command("status")
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
    app.command(_name)(_rollout_command(_name))

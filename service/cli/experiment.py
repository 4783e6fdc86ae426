"""``vigil experiment``: start an A/B/n test on a business KPI, see its arms and effects,
stop it.

``app`` is the ``experiment`` group; the root (``service.cli``) joins it with ``add_typer``.
"""

from __future__ import annotations

import json
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

app = typer.Typer(help="Experiments: A/B/n tests on business KPIs.", no_args_is_help=True)


def show_experiment(c: Ctx, d: dict[str, Any]) -> None:
    def human() -> None:
        decision = d.get("decision") or {}
        colour = {"concluded": "green", "stopped": "yellow"}.get(d["status"], "cyan")
        verdict = (f" — {decision.get('reason')}"
                   + (f", winner {decision['winner']}" if decision.get("winner") else "")
                   if decision else "")
        out.print(f"experiment on [bold]{d['model']}[/bold] ({d['spec']['primary']}): "
                  f"[{colour}]{d['status']}[/{colour}]{verdict}; at most "
                  f"{d['max_samples_per_arm']} per arm (fixed horizon "
                  f"{d['fixed_horizon_samples_per_arm']})")
        t = table("arm", "n", "mean", "interval", "lift", "p-value")
        effects = {e["arm"]: e for e in d.get("effects", [])}
        for arm in d["spec"]["arms"]:
            a = d.get("arms", {}).get(arm) or {"n": 0, "mean": None, "ci": [None, None]}
            e = effects.get(arm)
            t.add_row(arm + (" (control)" if arm == d.get("control") else ""), str(a["n"]),
                      "—" if a["mean"] is None else f"{a['mean']:.4g}",
                      "—" if a["ci"][0] is None else f"[{a['ci'][0]:.4g}, {a['ci'][1]:.4g}]",
                      "—" if e is None else f"{e['lift']:+.4g}",
                      "—" if e is None else f"{e['p_value']:.3g}")
        out.print(t)
    emit(c, d, human)


def parse_arms(arms: str) -> dict[str, float]:
    """``v1=0.5,v2=0.5`` (or ``v1,v2``: equal shares)."""
    parts = [p.strip() for p in arms.split(",") if p.strip()]
    try:
        if all("=" not in p for p in parts):
            return {p: 1 / len(parts) for p in parts}
        return {k: float(v) for k, v in (p.split("=", 1) for p in parts)}
    except ValueError:
        raise Failed(EXIT_INVALID, f"--arms {arms!r}: v1=0.5,v2=0.5") from None


@app.command("start")
def experiment_start(
        ctx: typer.Context, model: str,
        arms: Annotated[str, typer.Option(help="version=share, comma-separated")],
        primary: Annotated[str, typer.Option(help="the KPI tested")],
        min_effect: Annotated[float, typer.Option(help="absolute difference in its mean")],
        alpha: Annotated[float, typer.Option()] = 0.05,
        power: Annotated[float, typer.Option()] = 0.8,
        guardrail: Annotated[list[str] | None, typer.Option(
            help='a guardrail as JSON, e.g. \'{"metric": "error_rate", "max_increase": '
            '0.01}\' (repeatable)')] = None,
        mode: Annotated[str, typer.Option(help="fixed | bandit")] = "fixed",
        auto_promote: Annotated[bool, typer.Option()] = False,
        json_out: JsonFlag = False) -> None:
    """Start an experiment on MODEL: the arms take over its split."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        try:
            rails = [json.loads(g) for g in guardrail or []]
        except json.JSONDecodeError:
            raise Failed(EXIT_INVALID, "--guardrail: a JSON object") from None
        spec = {"arms": parse_arms(arms), "primary": primary, "min_effect": min_effect,
                "alpha": alpha, "power": power, "guardrails": rails, "mode": mode,
                "auto_promote": auto_promote}
        show_experiment(c, call(c, "POST", f"/admin/experiments/{model}", json=spec).json())
    run(body)


@app.command("status")
def experiment_status(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
    """The experiment's arms, effects against the control and decision."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_experiment(c, call(c, "GET", f"/admin/experiments/{model}").json()))


@app.command("stop")
def experiment_stop(ctx: typer.Context, model: str, json_out: JsonFlag = False) -> None:
    """Stop the experiment: no winner, the champion serves alone."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_experiment(c, call(c, "POST", f"/admin/experiments/{model}/stop"
                                        ).json()))

"""``vigil``: the operator CLI over the admin API (typer + rich + httpx).

Server and token come from ``--url``/``--token`` or ``VIGIL_URL``/``VIGIL_TOKEN``; the token is
never printed. Read commands take ``--json`` for machines. Exit codes a CI job can branch on:

    0 ok · 2 usage · 3 auth (401/403) · 4 not found · 5 invalid (422/413/400) ·
    6 conflict (409/412/428) · 7 server unreachable · 8 server error (5xx)
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

EXIT_AUTH, EXIT_NOT_FOUND, EXIT_INVALID, EXIT_CONFLICT, EXIT_UNREACHABLE, EXIT_SERVER = \
    3, 4, 5, 6, 7, 8
STATUS_EXIT = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 400: EXIT_INVALID,
               413: EXIT_INVALID, 422: EXIT_INVALID, 409: EXIT_CONFLICT, 412: EXIT_CONFLICT,
               428: EXIT_CONFLICT}

app = typer.Typer(help="Operate a Vigil gateway: models, deployments, drift, webhooks, audit.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Registered models and versions.", no_args_is_help=True)
deploy_app = typer.Typer(help="Change who serves: canary, shadows.", no_args_is_help=True)
drift_app = typer.Typer(help="Drift state, acknowledgement, rebaseline.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Retraining webhook deliveries.", no_args_is_help=True)
rollout_app = typer.Typer(help="Progressive delivery: canary analysis by steps.",
                          no_args_is_help=True)
logs_app = typer.Typer(help="The prediction log.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The store.", no_args_is_help=True)
for sub, name in ((models_app, "models"), (deploy_app, "deploy"), (drift_app, "drift"),
                  (webhooks_app, "webhooks"), (rollout_app, "rollout"),
                  (logs_app, "logs"), (config_app, "config"), (db_app, "db")):
    app.add_typer(sub, name=name)

out = Console()
err = Console(stderr=True)


@dataclass
class Ctx:
    url: str
    token: str | None
    json: bool


class Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@app.callback()
def main_options(
        ctx: typer.Context,
        url: Annotated[str, typer.Option(envvar="VIGIL_URL", help="the gateway")] =
        "http://127.0.0.1:3000",
        token: Annotated[str | None, typer.Option(envvar="VIGIL_TOKEN", show_default=False,
                                                  help="a bearer token (never printed)")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] =
        False) -> None:
    ctx.obj = Ctx(url.rstrip("/"), token, json_out)
    # a pipe or a CI log gets 160 columns rather than rich's 80 off a terminal; decided per
    # call, since COLUMNS and the output may change between calls in one process
    wide = not out.is_terminal and "COLUMNS" not in os.environ
    out.width = 160 if wide else None  # type: ignore[assignment]  # None: rich decides


JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def ctx_of(ctx: typer.Context, json_out: bool) -> Ctx:
    c: Ctx = ctx.obj
    if json_out:
        c.json = True
    return c


def call(c: Ctx, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if c.token:
        headers["Authorization"] = f"Bearer {c.token}"
    try:
        r = httpx.request(method, c.url + path, headers=headers, timeout=30, **kw)
    except httpx.TransportError as exc:
        raise Failed(EXIT_UNREACHABLE, f"cannot reach {c.url}: {type(exc).__name__}") from None
    if r.status_code >= 400:
        try:
            body = r.json()
            message = body.get("error", r.text)
            if body.get("errors"):
                message += "".join(f"\n  {e['field']}: {e['reason']}" for e in body["errors"])
        except ValueError:
            message = r.text[:500] or r.reason_phrase
        code = STATUS_EXIT.get(r.status_code, EXIT_SERVER if r.status_code >= 500 else 1)
        raise Failed(code, f"{r.status_code}: {message}")
    return r


def run(fn: Any) -> Any:
    """Wrap a command body: server errors become a message and an exit code."""
    try:
        return fn()
    except Failed as exc:
        err.print(f"[red]error[/red] {exc.message}", highlight=False)
        raise typer.Exit(exc.code) from None


def emit(c: Ctx, data: Any, human: Any) -> None:
    if c.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


def pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


# ----------------------------------------------------------------------------- status


@app.command()
def status(ctx: typer.Context,
        json_out: JsonFlag = False) -> None:
    """Every model: who serves, traffic, errors, drift and quality."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        deployments = call(c, "GET", "/admin/deployments").json()["deployments"]
        pending = call(c, "GET", "/admin/webhooks/deliveries",
                       params={"status": "pending", "limit": 1000}).json()["items"]
        rows = []
        for d in deployments:
            m = d["model"]
            stats = call(c, "GET", f"/admin/models/{m}/stats").json()
            drift = call(c, "GET", f"/admin/drift/{m}").json()
            champ = stats["versions"].get(d["champion"]["version"], {}).get("champion", {})
            quality = champ.get("quality", {}).get("window", {})
            rows.append({
                "model": m, "revision": d["revision"], "champion": d["champion"]["version"],
                "canary": d.get("canary"), "shadows": d.get("shadows", []),
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
        emit(c, {"models": rows}, human)
    run(body)


def table(*columns: str, title: str | None = None) -> Table:
    """Every table of the CLI: a rule under the header and no box, so 80 columns hold more,
    and a value too long for its column folds onto the next line instead of being cut to
    an ellipsis (a timestamp, an action or a target an operator has to read whole)."""
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1),
              pad_edge=False, collapse_padding=True)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


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


# ----------------------------------------------------------------------------- deploy


def patch(c: Ctx, model: str, doc: dict[str, Any]) -> dict[str, Any]:
    current = call(c, "GET", f"/admin/deployments/{model}")
    etag = current.headers.get("etag") or f'"{current.json()["revision"]}"'
    r = call(c, "PATCH", f"/admin/deployments/{model}", content=json.dumps(doc),
             headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"})
    return r.json()  # type: ignore[no-any-return]


def show_deployment(c: Ctx, d: dict[str, Any], verb: str) -> None:
    def human() -> None:
        can = d.get("canary")
        out.print(f"{verb} [bold]{d['model']}[/bold] revision {d['revision']}: champion "
                  f"{d['champion']['version']}"
                  + (f", canary {can['version']} at {pct(can['weight'])}" if can else "")
                  + (", shadows " + ", ".join(s["version"] for s in d["shadows"])
                     if d.get("shadows") else ""))
    emit(c, d, human)


@deploy_app.command("canary")
def deploy_canary(ctx: typer.Context, model: str, version: str,
                  weight: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
        json_out: JsonFlag = False) -> None:
    """Start (or re-weight) a canary."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(c, patch(c, model, {"canary": {"version": version,
                                                               "weight": weight}}), "updated"))


@deploy_app.command("clear-canary")
def deploy_clear_canary(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Stop the canary: all traffic to the champion."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(c, patch(c, model, {"canary": None}), "updated"))


@deploy_app.command("shadow")
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


@app.command()
def promote(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Make the canary the champion."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(
        c, call(c, "POST", f"/admin/deployments/{model}/promote").json(), "promoted"))


@app.command()
def rollback(ctx: typer.Context, model: str,
        json_out: JsonFlag = False) -> None:
    """Bring the previous champion back (the canary is cleared)."""
    c = ctx_of(ctx, json_out)
    run(lambda: show_deployment(
        c, call(c, "POST", f"/admin/deployments/{model}/rollback").json(), "rolled back"))


# ----------------------------------------------------------------------------- audit, logs


@app.command()
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


@logs_app.command("export")
def logs_export(
        out_path: Annotated[Path, typer.Option("--out", help="the Parquet file to write")],
        model: Annotated[str | None, typer.Option()] = None,
        since: Annotated[str | None, typer.Option(help="24h, 30m, 7d or ISO 8601")] = None,
        log_dir: Annotated[Path | None, typer.Option(help="default: $VIGIL_DATA_DIR/log")] =
        None) -> None:
    """Write prediction records to Parquet, one row per predicted row (reads the local log)."""
    from monitoring.log.export import export_parquet, parse_since

    directory = log_dir or Path(os.environ.get("VIGIL_DATA_DIR", "var")) / "log"
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    n = export_parquet(directory, out_path, model=model, since=start)
    out.print(f"wrote {n} rows to {out_path}")


# ----------------------------------------------------------------------------- local


@config_app.command("check")
def config_check(config: Annotated[Path | None, typer.Option(
        help="default: $VIGIL_CONFIG or vigil.yaml")] = None) -> None:
    """Validate vigil.yaml and VIGIL_* environment variables; say what is wrong."""
    if config is not None:
        if not config.is_file():
            err.print(f"[red]error[/red] {config}: no such file")
            raise typer.Exit(EXIT_INVALID)
        os.environ["VIGIL_CONFIG"] = str(config)
    from service.settings import load_settings, problems

    try:
        s = load_settings()
    except Exception as exc:  # a field (ValidationError), or the YAML's syntax
        for line in problems(exc):
            err.print(f"[red]invalid[/red] {line}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    from monitoring.retrain.webhooks import targets_from_config

    try:
        targets = targets_from_config(s.webhooks.targets, s.webhooks.allow_link_local)
    except ValueError as exc:
        err.print(f"[red]invalid[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    problems = [f"webhooks.targets.{t.name}: no secret (secret_env unset or empty): its "
                "deliveries will not be signed" for t in targets if not t.secrets]
    if not s.auth.tokens and not s.auth.bootstrap_admin_token:
        problems.append("no auth.tokens in the config and VIGIL_BOOTSTRAP_ADMIN_TOKEN is not "
                        "set here (`make serve` sets it from $VIGIL_DATA_DIR/admin-token); "
                        "without either, nobody can use the admin API")
    for p in problems:
        err.print(f"[yellow]warning[/yellow] {p}")
    out.print(f"ok: store {s.store_url.split('@')[-1]}, log {s.log_dir}, "
              f"{s.server.workers} workers, {len(s.auth.tokens)} token(s)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the store's migrations up to the newest."""
    from service.settings import load_settings
    from store import make_engine, migrate

    s = load_settings()
    migrate(make_engine(s.store_url))
    out.print(f"store at the newest schema: {s.store_url.split('@')[-1]}")


@app.command()
def serve(port: Annotated[int, typer.Option()] = 3000) -> None:
    """Start the gateway (as `make serve` does, without building the environment)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    os.execv(str(bentoml), [str(bentoml), "serve", "service.gateway:Gateway", "--port",
                            str(port)])


# the models, drift, rollout, webhook and retrain commands register themselves on import
from service import cli_models, cli_monitoring  # noqa: E402,F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()

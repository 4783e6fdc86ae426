"""The commands that work on this machine rather than through the admin API: ``vigil logs
export`` (reads the local prediction log), ``vigil config check``, ``vigil db upgrade`` and
``vigil serve``.

``logs_app``, ``config_app`` and ``db_app`` are groups; ``commands`` holds ``serve`` (no
name: the root merges it). Heavy imports (pyarrow, settings, the store) wait for the command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli.common import EXIT_INVALID, EXIT_UNREACHABLE, err, out

logs_app = typer.Typer(help="The prediction log.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The store.", no_args_is_help=True)
commands = typer.Typer()


@logs_app.command("export")
def logs_export(
        out_path: Annotated[Path, typer.Option("--out", help="the Parquet file to write")],
        model: Annotated[str | None, typer.Option()] = None,
        since: Annotated[str | None, typer.Option(help="24h, 30m, 7d or ISO 8601")] = None,
        log_dir: Annotated[Path | None, typer.Option(help="default: $VIGIL_DATA_DIR/log")] =
        None) -> None:
    """Write prediction records to Parquet, one row per predicted row (reads the local log;
    on log.backend: nats, the model's partition of the stream and the spills not forwarded)."""
    from monitoring.log.export import export_parquet, nats_records, parse_since, write_parquet
    from monitoring.log.frames import LogKeyError
    from service.cluster import stream_spec
    from service.settings import load_settings, problems

    try:
        settings = load_settings()
    except Exception as exc:  # the log's keys are part of the configuration
        for line in problems(exc):
            err.print(f"[red]invalid[/red] {line}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    directory = log_dir or settings.log_dir
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    if settings.log.backend == "nats":
        try:
            n = write_parquet(nats_records(stream_spec(settings), directory / "spill",
                                           model=model, since=start,
                                           keys=settings.log.encryption.keys()),
                              out_path, model=model, since=start)
        except LogKeyError as exc:  # a record sealed by a key that is not configured
            err.print(f"[red]error[/red] the prediction log cannot be read: {exc}")
            raise typer.Exit(EXIT_INVALID) from None
        except Exception as exc:  # NATS away, or the stream missing: say which
            err.print(f"[red]error[/red] reading stream {settings.log.nats.stream} at "
                      f"{settings.log.nats.url}: {exc!r}")
            raise typer.Exit(EXIT_UNREACHABLE) from None
    else:
        n = export_parquet(directory, out_path, model=model, since=start,
                           keys=settings.log.encryption.keys())
    out.print(f"wrote {n} rows to {out_path}")


@logs_app.command("outcomes")
def logs_outcomes(
        model: Annotated[str, typer.Option(help="the model whose KPI outcomes to export")],
        out_path: Annotated[Path, typer.Option("--out", help="the Parquet file to write")],
        since: Annotated[str | None, typer.Option(help="24h, 30m, 7d or ISO 8601")] = None
        ) -> None:
    """Write the business KPI outcomes joined per request (version, variant, label, one
    kpi.<name> column each) to Parquet (reads the local store)."""
    from monitoring.log.export import parse_since
    from monitoring.quality.outcomes import export_outcomes
    from service.settings import load_settings
    from store import make_engine
    from store.kpis import KpiStore

    try:
        start = parse_since(since) if since else 0.0
    except ValueError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    engine = make_engine(load_settings().store_url)
    n = export_outcomes(KpiStore(engine), model, out_path, start)
    out.print(f"wrote {n} rows to {out_path}")


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
    warnings = [f"webhooks.targets.{t.name}: no secret (secret_env unset or empty): its "
                "deliveries will not be signed" for t in targets if not t.secrets]
    if not s.auth.tokens and not s.auth.bootstrap_admin_token:
        warnings.append("no auth.tokens in the config and VIGIL_BOOTSTRAP_ADMIN_TOKEN is not "
                        "set here (`make serve` sets it from $VIGIL_DATA_DIR/admin-token); "
                        "without either, nobody can use the admin API")
    for w in warnings:
        err.print(f"[yellow]warning[/yellow] {w}")
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


@commands.command()
def serve(port: Annotated[int, typer.Option()] = 3000) -> None:
    """Start the gateway (as `make serve` does, without building the environment)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    os.execv(str(bentoml), [str(bentoml), "serve", "service.gateway:Gateway", "--port",
                            str(port)])

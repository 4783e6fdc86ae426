"""``vigil``: the operator CLI over the admin API (typer + rich + httpx).

Server and token come from ``--url``/``--token`` or ``VIGIL_URL``/``VIGIL_TOKEN``; the token is
never printed. Read commands take ``--json`` for machines. Exit codes a CI job can branch on:

    0 ok · 2 usage · 3 auth (401/403) · 4 not found · 5 invalid (422/413/400) ·
    6 conflict (409/412/428) · 7 server unreachable · 8 server error (5xx)

This module is the root: the global options, and every command group joined with
``add_typer``. One module per group (``models``, ``deploy``, ``drift``, ``rollout``,
``webhooks``, ``audit``, ``status``; ``local`` for logs, config, db and serve, which work on
this machine); the top-level commands (``status``, ``promote``, ``rollback``, ``audit``,
``serve``, ``retrain``) sit in their module's ``commands``, a Typer with no name that
``add_typer`` merges into the root. What they share (context, the API call, output, exit
codes) is ``service.cli.common``.
"""

from __future__ import annotations

import os
import ssl
from typing import Annotated

import typer

from monitoring.tls import client_context
from service.cli import audit, cluster, deploy, drift, local, models, rollout, status, webhooks
from service.cli.common import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_SERVER,
    EXIT_UNREACHABLE,
    Ctx,
    err,
    out,
)
from service.cli.experiment import app as experiment_app

__all__ = ["EXIT_AUTH", "EXIT_CONFLICT", "EXIT_INVALID", "EXIT_NOT_FOUND", "EXIT_SERVER",
           "EXIT_UNREACHABLE", "app", "main"]

app = typer.Typer(help="Operate a Vigil gateway: models, deployments, drift, webhooks, audit.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
# the order of `vigil --help`: the top-level commands, then the groups
for commands in (status.commands, deploy.commands, audit.commands, local.commands,
                 webhooks.commands, cluster.commands):
    app.add_typer(commands)
for group, name in ((models.app, "models"), (deploy.app, "deploy"), (drift.app, "drift"),
                    (webhooks.app, "webhooks"), (rollout.app, "rollout"),
                    (experiment_app, "experiment"),
                    (local.logs_app, "logs"), (local.config_app, "config"),
                    (local.db_app, "db")):
    app.add_typer(group, name=name)


def tls_context(ca_bundle: str | None, cert: str | None, key: str | None,
                insecure: bool) -> ssl.SSLContext | bool:
    """How the CLI checks an HTTPS gateway; ``--insecure`` says so on every call."""
    if insecure:
        err.print("[yellow]warning[/yellow] --insecure: the gateway's certificate is not "
                  "checked")
    if not (ca_bundle or cert or insecure):
        return True
    try:
        return client_context(ca_bundle, verify=not insecure, certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        err.print(f"[red]error[/red] TLS files: {exc}")
        raise typer.Exit(EXIT_INVALID) from None


@app.callback()
def main_options(
        ctx: typer.Context,
        url: Annotated[str, typer.Option(envvar="VIGIL_URL", help="the gateway")] =
        "http://127.0.0.1:3000",
        token: Annotated[str | None, typer.Option(envvar="VIGIL_TOKEN", show_default=False,
                                                  help="a bearer token (never printed)")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] =
        False,
        ca_bundle: Annotated[str | None, typer.Option(
            envvar="VIGIL_CA_BUNDLE", help="PEM CAs to trust for an HTTPS gateway")] = None,
        client_cert: Annotated[str | None, typer.Option(
            envvar="VIGIL_CLIENT_CERT", help="PEM client certificate (mTLS)")] = None,
        client_key: Annotated[str | None, typer.Option(
            envvar="VIGIL_CLIENT_KEY", help="its PEM key, if not in the certificate")] = None,
        insecure: Annotated[bool, typer.Option(
            envvar="VIGIL_INSECURE", help="do not check the gateway's certificate")] =
        False) -> None:
    ctx.obj = Ctx(url.rstrip("/"), token, json_out,
                  tls_context(ca_bundle, client_cert, client_key, insecure))
    # a pipe or a CI log gets 160 columns rather than rich's 80 off a terminal; decided per
    # call, since COLUMNS and the output may change between calls in one process
    wide = not out.is_terminal and "COLUMNS" not in os.environ
    out.width = 160 if wide else None  # type: ignore[assignment]  # None: rich decides


def main() -> None:
    app()


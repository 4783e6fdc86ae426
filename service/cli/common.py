"""What every ``vigil`` command shares: the context (server, token, ``--json``), the admin API
call that turns an error status into an exit code, output (``emit``, ``table``, ``pct``) and
the exit codes themselves.

    0 ok · 2 usage · 3 auth (401/403) · 4 not found · 5 invalid (422/413/400) ·
    6 conflict (409/412/428) · 7 server unreachable · 8 server error (5xx)
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
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

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@dataclass
class Ctx:
    url: str
    token: str | None
    json: bool
    verify: ssl.SSLContext | bool = True  # a CA bundle, a client certificate (mTLS)


class Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        r = httpx.request(method, c.url + path, headers=headers, timeout=30, verify=c.verify,
                          **kw)
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


def run(fn: Callable[[], Any]) -> Any:
    """Wrap a command body: server errors become a message and an exit code."""
    try:
        return fn()
    except Failed as exc:
        err.print(f"[red]error[/red] {exc.message}", highlight=False)
        raise typer.Exit(exc.code) from None


def emit(c: Ctx, data: Any, human: Callable[[], Any]) -> None:
    if c.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


def pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def table(*columns: str, title: str | None = None) -> Table:
    """Every table of the CLI: a rule under the header and no box, so 80 columns hold more,
    and a value too long for its column folds onto the next line instead of being cut to
    an ellipsis (a timestamp, an action or a target an operator has to read whole)."""
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1),
              pad_edge=False, collapse_padding=True)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t

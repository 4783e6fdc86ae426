"""``vigil models``: registered models and versions, and registering one with its lineage.

``app`` is the ``models`` group; the root (``service.cli``) joins it with ``add_typer``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import EXIT_INVALID, Failed, JsonFlag, call, ctx_of, emit, out, run, table

app = typer.Typer(help="Registered models and versions.", no_args_is_help=True)


@app.command("list")
def models_list(ctx: typer.Context,
        json_out: JsonFlag = False) -> None:
    """Models, their versions and champions."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        data = call(c, "GET", "/admin/models").json()

        def human() -> None:
            t = table("model", "champion", "versions")
            for m in data["models"]:
                t.add_row(m["name"], m.get("champion") or "—", ", ".join(m["versions"]))
            out.print(t)
        emit(c, data, human)
    run(body)


@app.command("show")
def models_show(ctx: typer.Context, model: str, version: str,
        json_out: JsonFlag = False) -> None:
    """A version's card, lineage and reference profile."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        data = call(c, "GET", f"/admin/models/{model}/versions/{version}").json()

        def human() -> None:
            card = data["card"]
            lineage = card.get("lineage", {})
            out.print(f"[bold]{model}:{version}[/bold]  {card.get('task')}  "
                      f"created {data.get('created_at')}")
            out.print(f"  onnx sha256   {data.get('onnx_sha256')}")
            out.print(f"  dataset       {lineage.get('dataset_sha256')}")
            out.print(f"  code commit   {lineage.get('code_commit')}")
            out.print(f"  hyperparams   {json.dumps(lineage.get('hyperparameters', {}))}")
            out.print(f"  metrics       {json.dumps(card.get('metrics', {}))}")
            out.print(f"  inputs        {len(card.get('inputs', []))} features; reference "
                      f"{data.get('profile', {}).get('rows')} rows")
        emit(c, data, human)
    run(body)


def git_commit(cwd: Path) -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def complete_lineage(card: dict[str, Any], reference: bytes, cwd: Path) -> list[str]:
    """Fill what the card leaves out: the dataset fingerprint (SHA-256 of the reference file)
    and the code commit (this git checkout). Returns what was filled."""
    lineage = card.setdefault("lineage", {})
    filled = []
    if not lineage.get("dataset_sha256"):
        lineage["dataset_sha256"] = hashlib.sha256(reference).hexdigest()
        filled.append("lineage.dataset_sha256")
    if not lineage.get("code_commit"):
        commit = git_commit(cwd)
        if commit is None:
            raise Failed(EXIT_INVALID, "the card has no lineage.code_commit and this is not a "
                         "git checkout: set it in the card")
        lineage["code_commit"] = commit
        filled.append("lineage.code_commit")
    return filled


@app.command("register")
def models_register(
        ctx: typer.Context, model: str,
        onnx: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="model.onnx")],
        card: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="card JSON")],
        reference: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                                help="reference rows, CSV or Parquet")],
        version: Annotated[str | None, typer.Option(help="overrides the card's version")] =
        None, json_out: JsonFlag = False) -> None:
    """Register a version; lineage the card does not give is filled in (dataset fingerprint
    from the reference file, code commit from this git checkout)."""
    c = ctx_of(ctx, json_out)

    def body() -> None:
        try:
            card_data = json.loads(card.read_text())
        except ValueError as exc:
            raise Failed(EXIT_INVALID, f"{card}: not JSON ({exc})") from None
        if version:
            card_data["version"] = version
        card_data.setdefault("name", model)
        ref_bytes = reference.read_bytes()
        filled = complete_lineage(card_data, ref_bytes, Path.cwd())
        r = call(c, "POST", f"/admin/models/{model}/versions",
                 data={"card": json.dumps(card_data)},
                 files={"model": ("model.onnx", onnx.read_bytes()),
                        "reference": (reference.name, ref_bytes)})
        data = {**r.json(), "filled": filled, "created": r.status_code == 201}
        emit(c, data, lambda: out.print(
            f"{'registered' if data['created'] else 'already registered'} "
            f"[bold]{model}:{card_data.get('version')}[/bold]"
            + (f" (filled {', '.join(filled)})" if filled else "")))
    run(body)

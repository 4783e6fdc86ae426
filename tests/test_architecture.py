"""The house's shape, checked on every run: the import graph of Vigil's packages has no cycle,
the layers only point down, SQLAlchemy stays in the store, and no module grows past 400 lines.

Layers, top to bottom: ``service`` (HTTP, CLI, the two BentoML services: the composition
roots) → ``monitoring`` → ``control`` (operations that change what serves) → ``store``
(persistence) → ``models`` (the pure domain). Every import counts, the ones inside functions
too: an import moved into a function still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "models", "monitoring", "store", "control")
MAX_LINES = 400

# package → the packages of ours it may import (itself always allowed)
ALLOWED = {
    "models": set(),
    "store": {"models"},
    "control": {"models", "store"},
    "monitoring": {"models", "store", "control"},
    "service": {"models", "store", "control", "monitoring"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of ours (or third-party top-level name) that ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return out


def ours(target: str, known: set[str]) -> str | None:
    """The module of ours that an import names (``a.b.C`` → ``a.b``), or None."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {ours(t, known) for t in imports_of(path, name, known)}
        edges[name] = {t for t in targets if t and t != name}
    return edges


def raw_imports() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def test_the_import_graph_has_no_cycle(graph: dict[str, set[str]]) -> None:
    # a package's __init__ re-exporting its own modules is not a cycle worth reporting
    edges = {m: {t for t in ts if not (t == m.rpartition(".")[0] or m.startswith(t + "."))}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_layers_only_point_down(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts
                   if t.split(".")[0] != m.split(".")[0]
                   and t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert not wrong, "\n".join(wrong)


def test_sqlalchemy_is_imported_only_in_the_store() -> None:
    wrong = sorted(m for m, ts in raw_imports().items()
                   if any(t.split(".")[0] in {"sqlalchemy", "alembic"} for t in ts)
                   and m.split(".")[0] != "store")
    assert not wrong, f"outside store/: {wrong}"


def test_no_module_is_over_400_lines_or_imports_at_its_bottom() -> None:
    mods = modules()
    long = {n: c for n, p in mods.items() if (c := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
    late = sorted(n for n, p in mods.items() if "noqa: E402" in p.read_text())
    assert not late, f"imports below code (noqa: E402): {late}"


def test_the_checker_sees_a_cycle_and_a_layer_break(tmp_path: Path) -> None:
    """The checks above are only as good as the graph: it must resolve both import forms."""
    known = {"models.a", "models.b", "service.x"}
    a = tmp_path / "a.py"
    a.write_text("from models import b\nimport service.x\n\ndef f():\n    from models.b import C\n")
    assert imports_of(a, "models.a", known) == {"models.b", "service.x"}
    assert ours("models.b.C", known) == "models.b"

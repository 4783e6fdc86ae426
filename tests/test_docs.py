"""The documentation stays true to the code: the configuration page is generated from the
Settings model, every key says what it does, links resolve, and nothing cites a document
outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.settings_doc import PAGE, render, undocumented

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_settings_key_has_a_description() -> None:
    assert undocumented() == [], "add Field(description=...) in service/settings.py"


def test_configuration_page_is_generated_from_settings() -> None:
    assert PAGE.read_text() == render(), (
        "docs/configuration.md is out of date: python -m service.settings_doc "
        "> docs/configuration.md")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_relative_links_resolve() -> None:
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages()
              for target in LINK.findall(page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert broken == []


def test_nothing_cites_a_document_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    citing = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".cfg"} or \
                not path.is_file() or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"DESIGN(\.md| §)|\.\./shared/", text):
            citing.append(name)
    assert citing == []

"""The documentation stays true to the code: the configuration page is generated from the
Settings model, every key says what it does, links resolve, and nothing cites a document
outside the repository."""

from __future__ import annotations

from service.settings_doc import PAGE, render, undocumented


def test_every_settings_key_has_a_description() -> None:
    assert undocumented() == [], "add Field(description=...) in service/settings.py"


def test_configuration_page_is_generated_from_settings() -> None:
    assert PAGE.read_text() == render(), (
        "docs/configuration.md is out of date: python -m service.settings_doc "
        "> docs/configuration.md")

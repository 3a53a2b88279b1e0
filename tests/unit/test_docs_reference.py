"""The reference pages of the documentation say what the code says: regenerate them with
`make reference` (python -m tools.docs_reference) when this fails."""

from __future__ import annotations

import json

import pytest

from compare_models.config import project_root
from tools import docs_reference


@pytest.mark.parametrize("path", sorted(docs_reference.PAGES))
def test_generated_reference_is_current(path) -> None:
    stored = (project_root() / path).read_text(encoding="utf-8")
    assert stored == docs_reference.PAGES[path](), (
        f"{path} is stale: run `make reference` and commit the result"
    )


def test_check_names_a_stale_page(tmp_path) -> None:
    assert docs_reference.write(tmp_path) == sorted(
        docs_reference.PAGES, key=list(docs_reference.PAGES).index
    )
    assert docs_reference.stale(tmp_path) == []
    page = tmp_path / "docs/reference/cli.md"
    page.write_text(page.read_text() + "edited by hand\n")
    assert docs_reference.stale(tmp_path) == ["docs/reference/cli.md"]


def test_reference_covers_every_command_setting_and_exit_code() -> None:
    from compare_models.cli.main import EXIT_CODES, build_parser
    from compare_models.config import Settings

    cli = docs_reference.cli_page()
    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for name in commands.choices:
        assert f"## `{name}`" in cli
    for code in EXIT_CODES:
        assert f"| {code} |" in cli
    settings = docs_reference.settings_page()
    for field in Settings.model_fields.values():
        assert all(f"`{v}`" in settings for v in docs_reference._variables(field))
    assert json.loads(docs_reference.manifest_schema())["title"]

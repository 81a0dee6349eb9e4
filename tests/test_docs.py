"""The documentation site is checked like code: the CLI reference is current, every setting is documented,
the README stays a front door whose links resolve (datasette's settings-page test, sqlite-utils' docs test)."""

from __future__ import annotations

import re

import pytest
import yaml

from retrieval.settings import Settings
from tests.conftest import REPO

DOCS = REPO / "docs"
SETTING = re.compile(r"\bMEDSEARCH_[A-Z0-9_]*[A-Z0-9]\b(?!_|\*)")  # MEDSEARCH_DICOMWEB_* is a family, not a name
CODE_WITH_SETTINGS = ["retrieval", "indexer", "api", "bench", "Dockerfile", "docker-compose.yml", "Makefile"]


def _gen_cli():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_current_help() -> None:
    gen = _gen_cli()
    assert (DOCS / "cli.md").read_text() == gen.render(), "docs/cli.md is stale: run `python docs/gen_cli.py`"


def test_every_command_is_in_the_cli_reference_and_has_a_guide() -> None:
    gen = _gen_cli()
    reference = (DOCS / "cli.md").read_text()
    guides = "\n".join(p.read_text() for p in DOCS.rglob("*.md") if p.name != "cli.md")
    paths = [path for path in gen.command_paths() if path]
    assert len(paths) >= 25 and ["probe", "rank"] in paths and ["index"] in paths
    for path in paths:
        name = " ".join(["medsearch", *path])
        assert f"## `{name}`" in reference, f"docs/cli.md lacks `{name}`"
        assert name in guides, f"no guide page in docs/ mentions `{name}`"


def _settings_classes(cls: type[Settings] = Settings) -> list[type[Settings]]:
    """Settings and every subclass (the service's ServiceSettings adds host, keys, CORS, ...)."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in _settings_classes(child))]


def _settings_in_code() -> set[str]:
    import api.config  # noqa: F401  # defines ServiceSettings

    names = {f"MEDSEARCH_{field.upper()}" for cls in _settings_classes() for field in cls.model_fields}
    assert "MEDSEARCH_CORS_ORIGINS" in names  # the service's own settings are included
    for root in CODE_WITH_SETTINGS:
        path = REPO / root
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            names |= set(SETTING.findall(file.read_text()))
    return names


def test_every_setting_is_documented_with_a_default_and_meaning() -> None:
    page = (DOCS / "settings.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `MEDSEARCH_")]
    documented = {name for row in rows for name in SETTING.findall(row.split("|")[1])}
    in_code = _settings_in_code()
    assert len(in_code) > 50 and "MEDSEARCH_DATA_DIR" in in_code
    missing = sorted(in_code - documented)
    assert not missing, f"settings read by the code but not in docs/settings.md's table: {missing}"
    for row in rows:  # every row: name | default | meaning, none of them blank
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 3 and all(cells), f"incomplete row in docs/settings.md: {row}"
    unknown = sorted(documented - in_code)
    assert not unknown, f"docs/settings.md documents settings the code never reads: {unknown}"


def test_every_page_is_in_the_site_navigation() -> None:
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    in_nav = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav, (
        f"pages missing from mkdocs.yml nav: {on_disk - in_nav}; missing files: {in_nav - on_disk}"
    )


def test_readme_is_a_front_door_whose_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for heading in [
        "## Quickstart",
        "## Getting the real MedSigLIP weights",
        "## Commands",
        "## What was not verified",
    ]:
        assert heading in readme
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert "docs/screenshot.png" in local and "docs/cli.md" in local and "docs/settings.md" in local
    for link in local:
        assert (REPO / link).exists(), f"README links to a missing file: {link}"


@pytest.mark.parametrize("page", ["testing.md", "architecture.md", "extending.md"])
def test_inside_pages_have_their_checklists(page: str) -> None:
    text = (DOCS / page).read_text()
    expected = {
        "testing.md": ["make test-fast", "make test", "1311 s"],
        "architecture.md": ["errors, settings", "api", "may import"],
        "extending.md": ["encoder back end", "source", "route", "vector index"],
    }[page]
    for words in expected:
        assert words in text, f"docs/{page} does not mention {words!r}"

"""The documentation stays true to the code: the generated reference pages are current, the README
stays a short user's page, and every command and link it names exists.

The site itself is built strictly (`mkdocs build --strict`) by `make test` and `make docs`, so a
broken link or anchor between pages fails there.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
MAX_README_LINES = 250


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands() -> set[str]:
    import typer.main

    from r2r_synth.cli import app

    return set(typer.main.get_command(app).commands)


def _code(markdown: str) -> str:
    """The fenced code blocks and inline code spans of a Markdown text, joined."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    return "\n".join([*fenced, *re.findall(r"`([^`\n]+)`", prose)])


def test_generated_reference_is_current(tmp_path):
    """A flag, a help text or a record field changed without `make docs` fails here."""
    gen = _gen_docs()
    gen.write(tmp_path)
    fresh = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "the generator wrote nothing"
    stale = []
    for rel in sorted(fresh):
        committed = DOCS / rel
        if not committed.exists() or committed.read_text(encoding="utf-8") != (tmp_path / rel).read_text(
                encoding="utf-8"):
            stale.append(rel)
    extra = sorted(p.relative_to(DOCS).as_posix() for p in (DOCS / "reference" / "schemas").glob("*.json")
                   if p.relative_to(DOCS).as_posix() not in fresh)
    assert not stale and not extra, (
        f"docs/ is out of date with the code: changed {stale}, no longer generated {extra}; "
        "run `make docs` (or `.venv/bin/python scripts/gen_docs.py`) and commit docs/reference")


def test_cli_reference_names_every_command_and_flag():
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for name in _commands():
        assert f"\n## {name}\n" in text, f"the CLI reference has no section for `{name}`"
    assert "`--max-doc-chars`" in text and "| 3 |" in text and "| 130 |" in text


def test_schemas_match_r2r_synth_schema_command():
    """The schema files are exactly what `r2r-synth schema KIND` prints."""
    import json

    from typer.testing import CliRunner

    from r2r_synth.cli import app
    from r2r_synth.schemas import RECORD_KINDS

    for kind in RECORD_KINDS:
        out = CliRunner().invoke(app, ["schema", kind])
        assert out.exit_code == 0, out.output
        on_disk = json.loads((DOCS / "reference" / "schemas" / f"{kind}.json").read_text(encoding="utf-8"))
        assert json.loads(out.output) == on_disk


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move detail to a page under docs/")


def test_readme_names_only_real_commands():
    named = set(re.findall(r"\br2r-synth ([a-z][a-z0-9-]*)", _code(README.read_text(encoding="utf-8"))))
    assert named, "the README shows no r2r-synth command"
    unknown = named - _commands()
    assert not unknown, f"README.md shows commands the CLI does not have: {sorted(unknown)}"


def test_readme_has_a_section_per_command():
    headings = set(re.findall(r"^### ([a-z][a-z0-9-]*)\s*$", README.read_text(encoding="utf-8"), flags=re.MULTILINE))
    missing = _commands() - headings
    assert not missing, f"README.md has no `### <command>` section for {sorted(missing)}"


@pytest.mark.parametrize("path", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(path):
    """Links between files (the site's own anchors are checked by `mkdocs build --strict`)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        assert file.exists(), f"{path.relative_to(REPO)} links to {target}, which does not exist"


def test_every_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    missing = [p for p in pages if p not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"

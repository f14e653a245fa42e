"""docs/cli.md is the CLI's own --help (scripts/cli_reference.py), and that help shows readable
placeholders (FILE, DIR, N, GY ...) instead of Typer's `<path>`, `<list[Path]>`, `<bool>`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from ricecli.cli import app

ROOT = Path(__file__).resolve().parents[1]
# a `<...>` label as Typer prints a value's type; help texts may hold their own (`<out stem>`)
TYPE_LABEL = re.compile(r"<[\w\[\]|,. ]+>")
COMMANDS = [[], *([info.name] for info in app.registered_commands)]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference",
                                                  ROOT / "scripts" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> str:
    """docs/cli.md as the script renders it now."""
    return _script().render()


def _own_labels() -> set[str]:
    """The `<...>` words that the command sources write into their help texts themselves."""
    sources = [p.read_text() for p in (ROOT / "ricecli" / "commands").glob("*.py")]
    return set(TYPE_LABEL.findall("\n".join(sources)))


def test_docs_cli_md_is_the_help_of_today(reference):
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == reference, (
        "docs/cli.md differs from the CLI's --help: run `python scripts/cli_reference.py`")


def test_reference_has_every_command(reference):
    titles = re.findall(r"^## `(ricecli[\w ]*)`$", reference, flags=re.M)
    assert titles == [" ".join(["ricecli", *args]) for args in COMMANDS]
    assert "Usage: ricecli classify [OPTIONS]" in reference


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(["ricecli", *a]))
def test_help_has_readable_placeholders(args, reference):
    rich = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"}, prog_name="ricecli")
    assert rich.exit_code == 0, rich.output
    own = _own_labels()
    for text in (rich.output, reference):
        assert [t for t in TYPE_LABEL.findall(text) if t not in own] == []


def test_placeholders_say_what_the_value_is(reference):
    for option, placeholder in (("--t1", "PATH"), ("--out", "DIR"), ("--model", "FILE"),
                                ("--dose-relative-scale", "GY"), ("--jobs", "N")):
        assert f"{option} {placeholder} " in reference, option
    assert "--overwrite  " in reference  # a flag takes no value: no placeholder

"""Write docs/cli.md from the CLI's own `--help`, so that the reference cannot drift.

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 when docs/cli.md differs

Each help is rendered as plain text at a fixed width (Typer without rich, COLUMNS=100, no
colour), so the same code gives the same file on any machine; tests/test_cli_reference.py fails
when the file and the CLI differ.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python scripts/cli_reference.py` from a checkout
    sys.path.insert(0, str(ROOT))

from ricecli.cli import app  # noqa: E402

REFERENCE = ROOT / "docs" / "cli.md"
# plain text at a fixed width: no rich boxes, no colour, no terminal-dependent wrapping
HELP_ENV = {"COLUMNS": "100", "LINES": "50", "TERM": "dumb", "NO_COLOR": "1",
            "TYPER_USE_RICH": "0", "PYTHONIOENCODING": "utf-8"}
HEADER = """# ricecli command reference

Generated from the CLI's own `--help` by `python scripts/cli_reference.py`; do not edit by hand
(`tests/test_cli_reference.py` fails when this file and the CLI differ). Exit codes, the design
and the data flow: `docs/design.md`.
"""


def command_names() -> list[str]:
    """The CLI's commands in the order `ricecli --help` lists them."""
    return [info.name for info in app.registered_commands if info.name]


def help_text(args: list[str]) -> str:
    """`ricecli ARGS --help` as plain text at a fixed width."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
    env.update(HELP_ENV)
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", *args, "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ricecli {' '.join(args)} --help failed: {proc.stderr.strip()}")
    return "\n".join(line.rstrip() for line in proc.stdout.strip("\n").splitlines())


def render() -> str:
    """The whole reference: `ricecli --help`, then each command's `--help`."""
    sections = [HEADER]
    for args in [[], *([name] for name in command_names())]:
        title = " ".join(["ricecli", *args])
        sections.append(f"## `{title}`\n\n```text\n{help_text(args)}\n```\n")
    return "\n".join(sections)


def main() -> int:
    """Rewrite docs/cli.md, or with --check only say whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md differs")
    text = render()
    if parser.parse_args().check:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE} is out of date: run `python scripts/cli_reference.py`",
                  file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `ricecli` command line. Each command lives in ricecli/commands/<name>.py.

Exit codes (ricecli.errors): 0 answer; 1 internal error; 2 refused input or usage (one line naming
the file and the fix, nothing written); 3 ran but QA failed (no label); 130/143 interrupted.
"""

from __future__ import annotations

import typer

from ricecli.commands import batch, classify, demo, explain, info, prepare, simulate
from ricecli.errors import EXIT_CODES_HELP, run_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Recurrence vs radiation-induced contrast enhancement (RICE) after glioblastoma RT.",
    epilog=EXIT_CODES_HELP,
)
app.command("prepare")(prepare.command)
app.command("simulate")(simulate.command)
app.command("classify")(classify.command)
app.command("explain")(explain.command)
app.command("batch")(batch.command)
app.command("info")(info.command)
app.command("demo")(demo.command)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()

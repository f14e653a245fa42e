"""The `ricecli` command line. Each command lives in ricecli/commands/<name>.py.

Exit codes: 0 ok, 2 bad input or usage (one line naming the file and the fix), 1 internal
error (one line on how to report it).
"""

from __future__ import annotations

import sys

import typer

from ricecli.commands import batch, classify, demo, explain, info, prepare, simulate
from ricecli.errors import RicenetError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Recurrence vs radiation-induced contrast enhancement (RICE) after glioblastoma RT.",
)
app.command("prepare")(prepare.command)
app.command("simulate")(simulate.command)
app.command("classify")(classify.command)
app.command("explain")(explain.command)
app.command("batch")(batch.command)
app.command("info")(info.command)
app.command("demo")(demo.command)

REPORT = "please report it at the ricenet issue tracker with the command you ran"


def main() -> None:
    try:
        app(standalone_mode=False)
    except RicenetError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last line of defence: no traceback
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        print(f"internal error: {type(err).__name__}: {err} ({REPORT})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""One family of domain errors: each says which file is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path


class RicenetError(Exception):
    """Bad input or usage. The CLI prints `str(err)` as one line and exits with code 2."""

    def __init__(self, problem: str, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f"{self.path}: " if self.path else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return " ".join(f"{where}{self.problem}.{fix}".split()).replace("..", ".")


class InputError(RicenetError):
    """A file that cannot be used as given (missing, unreadable, wrong kind of image)."""


class DoseError(RicenetError):
    """A dose that cannot be taken as absolute Gy in the post-op frame."""


class OutputError(RicenetError):
    """An output location that would overwrite or mix with something else."""


class ModelError(RicenetError):
    """A model file that is missing, not a ricenet model, or mismatched with the data."""


REPORT = "please report it at the ricenet issue tracker with the command you ran"


def report_error(err: BaseException) -> int:
    """Print the one line a command shows for `err` (never a traceback); return its exit code.

    2: bad input or usage (our errors, click usage errors); 1: internal error; 130: aborted.
    """
    import sys

    import typer

    if isinstance(err, typer.Exit):
        return err.exit_code
    if isinstance(err, RicenetError):
        line, code = f"error: {err.one_line()}", 2
    elif isinstance(err, (typer.Abort, KeyboardInterrupt)):
        line, code = "aborted", 130
    elif callable(getattr(err, "show", None)) and hasattr(err, "exit_code"):
        err.show()  # a usage error of (Typer's) click: it prints its own usage line
        return 2
    else:
        first = (str(err).strip().splitlines() or [""])[0]
        line, code = f"internal error: {type(err).__name__}: {first} ({REPORT})", 1
    print(line, file=sys.stderr)
    return code


def run_app(app) -> None:
    """Run a Typer app so that every failure ends as one line and an exit code."""
    import sys

    try:
        app(standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the last line of defence
        sys.exit(report_error(err))

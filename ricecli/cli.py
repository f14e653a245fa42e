"""The `ricecli` command line: the Typer app (one module per command in ricecli/commands/),
readable placeholders in its --help, and the boundary that turns any failure into one line.

Exit codes (ricecli.errors): 0 answer; 1 internal error; 2 refused input or usage (one line naming
the file and the fix, nothing written); 3 ran but QA failed (no label); 130/143 interrupted.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, get_args, runtime_checkable

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from ricecli.commands import (
    batch,
    classify,
    cohort,
    demo,
    explain,
    info,
    prepare,
    simulate,
    study,
)
from ricecli.errors import EXIT_CODES_HELP, EXIT_INTERNAL, EXIT_REFUSED, RicenetError, sentence
from ricecli.signals import (
    Interrupted,
    install_signal_handlers,
    pending_signal,
    raise_if_interrupted,
    restore_signal_handlers,
)

if TYPE_CHECKING:  # typer >= 0.20 vendors click as typer._click
    from typer._click import Context, HelpFormatter, Parameter

# --- readable placeholders in --help ----------------------------------------------------------
# What an option's value is, by option or by "command option"; any other option by its type.
# Typer shows `<path>`, `<list[Path]>`, `<bool>` otherwise.
_METAVARS = {
    "--t1": "PATH", "--dose": "PATH", "--mask": "FILE", "--dose-frame": "FILE",
    "--dose-frame-transform": "FILE", "cohort --out": "DIR", "--labels": "CSV",
    "--label-map": "MAP", "--rules": "TOML", "--jobs": "N", "--lesion-mask": "FILE",
    "--model": "FILE", "--json": "FILE", "--out": "DIR", "batch --out": "CSV",
    "info --out": "FILE", "--save-prepared": "DIR", "--dicom-out": "DIR", "--explain-dir": "DIR",
    "--dose-unit": "UNIT", "--dose-fractions": "N", "--dose-relative-scale": "GY",
    "--cube-mm": "MM", "--stride-mm": "MM", "--shard": "I/N", "--device": "DEVICE",
    "--recurrence-fraction": "SHARE", "--test-fraction": "SHARE", "--skull-on-share": "SHARE",
    "--hypofractionated-fraction": "SHARE",
    "--event-study": "UID",
}
_BY_TYPE: dict[object, str] = {Path: "PATH", int: "N", float: "X", str: "NAME"}


def _metavar(command: str, param: Parameter) -> str | None:
    """The placeholder for `param`'s value: '' for a flag; None leaves the library's own."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.param_type_name == "argument":
        return (param.name or "value").upper()
    for opt in param.opts:
        named = _METAVARS.get(f"{command} {opt}") or _METAVARS.get(opt)
        if named:
            return named
    # typer >= 0.20 describes the value by its annotation; older typer says PATH, INTEGER ...
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return _BY_TYPE.get((get_args(annotation) or (annotation,))[0])  # list[Path] -> Path


class _NamedArgument(TyperArgument):
    """An argument whose help row shows its name only (typer adds `<type>` beside it)."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return None


def readable_metavars(command: str, params: Iterable[Parameter]) -> None:
    """Give every parameter of `command` a readable placeholder (FILE, DIR, N, GY ...)."""
    for param in params:
        if param.metavar is None:
            param.metavar = _metavar(command, param)
        if type(param) is TyperArgument:
            param.__class__ = _NamedArgument


class ReadableCommand(TyperCommand):
    """A command whose --help shows readable placeholders (`app.command(cls=ReadableCommand)`;
    train/'s app may use it too)."""

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        readable_metavars(self.name or "", self.get_params(ctx))
        super().format_help(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        """The first sentence of the help, whole: the command list wraps it (click would cut it
        at `limit` characters with '...')."""
        return super().get_short_help_str(limit=1000)


class ReadableGroup(TyperGroup):
    """A command group with readable placeholders in its own --help (`Typer(cls=...)`)."""

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        readable_metavars("", self.get_params(ctx))
        super().format_help(ctx, formatter)


app = typer.Typer(
    cls=ReadableGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click help, as docs/cli.md shows it: rich's boxes cut option names ("--dose-rel…")
    # and squeeze the help into a column a few words wide on an 80-column terminal
    rich_markup_mode=None,
    help="Recurrence vs radiation-induced contrast enhancement (RICE) after glioblastoma RT.",
    epilog=EXIT_CODES_HELP,
)


def _print_version(value: bool) -> None:
    if value:
        from ricecli import __version__

        typer.echo(f"ricecli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Recurrence vs radiation-induced contrast enhancement (RICE) after glioblastoma RT."""


app.command("prepare", cls=ReadableCommand)(prepare.command)
app.command("simulate", cls=ReadableCommand)(simulate.command)
app.command("classify", cls=ReadableCommand)(classify.command)
app.command("explain", cls=ReadableCommand)(explain.command)
app.command("batch", cls=ReadableCommand)(batch.command)
app.command("cohort", cls=ReadableCommand)(cohort.command)
app.command("study", cls=ReadableCommand)(study.command)
app.command("info", cls=ReadableCommand)(info.command)
app.command("demo", cls=ReadableCommand)(demo.command)

# --- one line per failure ---------------------------------------------------------------------
REPORT = ("please report it at the ricenet issue tracker with the command you ran; "
          "RICENET_DEBUG=1 shows the traceback")
DEBUG_ENV = "RICENET_DEBUG"  # set (not 0): every failure also prints its traceback
_OS_FIXES = {
    errno.EACCES: "choose a folder you can write to (or fix its permissions)",
    errno.EPERM: "choose a folder you can write to (or fix its permissions)",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENOSPC: "free disk space or choose another disk",
    errno.EDQUOT: "free disk space or choose another disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENAMETOOLONG: "choose a shorter path",
}


@runtime_checkable
class _ClickError(Protocol):
    """A usage error of (Typer's) click: it has an exit code and formats its own message."""

    exit_code: int

    def format_message(self) -> str: ...


def _os_error_line(err: OSError) -> str | None:
    """One line for an environment error on a named file (permissions, full disk, ...)."""
    fix = _OS_FIXES.get(err.errno or 0)
    if fix is None or not err.filename:
        return None
    reason = err.strerror or type(err).__name__
    return RicenetError(f"cannot be written or read ({reason})", err.filename, fix).one_line()


def _usage_line(err: _ClickError) -> str:
    """Click's usage error as one line (it prints usage, a hint and the error otherwise)."""
    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "ricecli"
    return f"usage error: {sentence(err.format_message())} Fix: see '{path} --help'."


def report_error(err: BaseException) -> int:
    """Print the one line a command shows for `err` (never a traceback); return its exit code.

    2: bad input or usage (our errors, click usage errors, unwritable paths); 1: internal error;
    130 / 143: interrupted by SIGINT / SIGTERM.
    """
    if isinstance(err, typer.Exit):
        return err.exit_code
    signum = err.signum if isinstance(err, Interrupted) else pending_signal()
    if isinstance(err, (typer.Abort, KeyboardInterrupt)) and signum is None:
        signum = signal.SIGINT
    if signum is not None:  # also a RuntimeError that a swallowed Ctrl-C left behind
        line, code = "interrupted", Interrupted(signum).exit_code
    elif isinstance(err, RicenetError):
        line, code = f"error: {err.one_line()}", EXIT_REFUSED
    elif isinstance(err, _ClickError):
        if type(err).__name__ == "NoArgsIsHelpError":  # no arguments at all: show the help
            print(err.format_message(), flush=True)
            return EXIT_REFUSED
        if not err.format_message().strip():  # the help was shown already
            return EXIT_REFUSED
        line, code = _usage_line(err), EXIT_REFUSED
    elif isinstance(err, OSError) and _os_error_line(err) is not None:
        line, code = f"error: {_os_error_line(err)}", EXIT_REFUSED
    else:  # the whole message on one line: its last lines often hold the cause (ITK's)
        line, code = f"internal error: {_whole_message(err)} ({REPORT})", EXIT_INTERNAL
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)
    return code


def _whole_message(err: BaseException) -> str:
    """`Type: message` with every line of the message, and of its cause, on one line."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    cause = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    if cause is not None and str(cause).strip():
        text += f" (caused by {type(cause).__name__}: {' '.join(str(cause).split())})"
    return text


def run_app(typer_app: typer.Typer, prog_name: str = "ricecli") -> None:
    """Run a Typer app (ricecli's, train's) so that every failure ends as one line and an exit
    code."""
    before = install_signal_handlers()
    try:
        code = typer_app(prog_name=prog_name, standalone_mode=False)  # typer.Exit's code
        raise_if_interrupted()
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the last line of defence
        sys.exit(report_error(err))
    finally:  # an in-process caller (tests, notebooks) gets its own handlers back
        restore_signal_handlers(before)


def main() -> None:
    """The `ricecli` entry point."""
    run_app(app)


if __name__ == "__main__":
    main()

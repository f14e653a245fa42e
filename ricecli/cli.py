"""The `ricecli` command line: the Typer app (one module per command in ricecli/commands/),
readable placeholders in its --help, and the boundary that turns any failure into one line.

Exit codes (ricecli.errors): 0 answer; 1 internal error; 2 refused input or usage (one line naming
the file and the fix, nothing written); 3 ran but QA failed (no label); 130/143 interrupted.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, get_args, runtime_checkable

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from ricecli.commands import batch, classify, demo, explain, info, prepare, simulate
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
    "--t1": "FILE", "--dose": "PATH", "--mask": "FILE", "--dose-frame": "FILE",
    "--model": "FILE", "--json": "FILE", "--out": "DIR", "batch --out": "CSV",
    "info --out": "FILE", "--save-prepared": "DIR", "--dicom-out": "DIR", "--explain-dir": "DIR",
    "--dose-unit": "UNIT", "--dose-fractions": "N", "--dose-relative-scale": "GY",
    "--cube-mm": "MM", "--stride-mm": "MM", "--shard": "I/N", "--device": "DEVICE",
    "--recurrence-fraction": "SHARE", "--test-fraction": "SHARE", "--skull-on-share": "SHARE",
    "--hypofractionated-fraction": "SHARE",
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
    help="Recurrence vs radiation-induced contrast enhancement (RICE) after glioblastoma RT.",
    epilog=EXIT_CODES_HELP,
)
app.command("prepare", cls=ReadableCommand)(prepare.command)
app.command("simulate", cls=ReadableCommand)(simulate.command)
app.command("classify", cls=ReadableCommand)(classify.command)
app.command("explain", cls=ReadableCommand)(explain.command)
app.command("batch", cls=ReadableCommand)(batch.command)
app.command("info", cls=ReadableCommand)(info.command)
app.command("demo", cls=ReadableCommand)(demo.command)

# --- one line per failure ---------------------------------------------------------------------
REPORT = "please report it at the ricenet issue tracker with the command you ran"
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
        if not err.format_message().strip():  # no arguments at all: the help was shown
            return EXIT_REFUSED
        line, code = _usage_line(err), EXIT_REFUSED
    elif isinstance(err, OSError) and _os_error_line(err) is not None:
        line, code = f"error: {_os_error_line(err)}", EXIT_REFUSED
    else:
        first = (str(err).strip().splitlines() or [""])[0]
        line, code = f"internal error: {type(err).__name__}: {first} ({REPORT})", EXIT_INTERNAL
    print(line, file=sys.stderr, flush=True)
    return code


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

"""One family of domain errors: each says which file is wrong and how to fix it.

Also the one place that turns any failure (or Ctrl-C / SIGTERM) into one line and an exit code:
0 answer, 1 internal error, 2 refused input or usage, 3 QA failed (no label), 130/143
interrupted by SIGINT/SIGTERM (nothing partial left behind).
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_REFUSED, EXIT_QA_FAILED = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_CODES_HELP = ("Exit codes: 0 answer; 1 internal error; 2 refused input or usage (one line "
                   "naming the file and the fix, nothing written); 3 ran but QA failed (no "
                   "label; JSON still written); 130/143 interrupted by Ctrl-C/SIGTERM (nothing "
                   "partial left).")


def _sentence(text: str) -> str:
    """`text` as one sentence: whitespace collapsed, exactly one final period."""
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else f"{text}."


class RicenetError(Exception):
    """Bad input or usage. The CLI prints `str(err)` as one line and exits with code 2."""

    def __init__(self, problem: str, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        # paths are quoted verbatim: a ".." in a path must stay "..", or the line names
        # another file; only the sentence ends are normalised
        where = f"{' '.join(self.path.split())}: " if self.path else ""
        fix = f" Fix: {' '.join(str(self.fix).split())}" if self.fix else ""
        return f"{where}{_sentence(self.problem)}{fix}"


class InputError(RicenetError):
    """A file that cannot be used as given (missing, unreadable, wrong kind of image)."""


class DoseError(RicenetError):
    """A dose that cannot be taken as absolute Gy in the post-op frame."""


class OutputError(RicenetError):
    """An output location that would overwrite or mix with something else."""


class ModelError(RicenetError):
    """A model file that is missing, not a ricenet model, or mismatched with the data."""


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """SIGINT or SIGTERM arrived: unwind (cleaning staged outputs), exit 130 / 143."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__("interrupted")

    def __reduce__(self):  # picklable across process pools
        return (Interrupted, (self.signum,))

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT


REPORT = "please report it at the ricenet issue tracker with the command you ran"

# --- signals ---------------------------------------------------------------------------------
# A Python signal handler runs in the main thread between bytecodes. Raised inside a callback
# that C++ invoked (SimpleITK's registration iteration command), the exception is printed with a
# traceback and turned into a RuntimeError. So the handler raises only outside such callbacks;
# inside one it records the signal and re-sends it shortly, until it lands in plain Python.
_PENDING: list[int] = []
_RETRY_S = 0.05


def pending_signal() -> int | None:
    """The signal that arrived and has not yet been acted on, if any."""
    return _PENDING[0] if _PENDING else None


def raise_if_interrupted() -> None:
    """Checkpoint: raise Interrupted when a signal arrived (e.g. one swallowed by C++ code)."""
    if _PENDING:
        raise Interrupted(_PENDING[0])


def _in_native_callback(frame) -> bool:
    """True when `frame` runs inside a call into SimpleITK's wrapped C++ (a callback)."""
    while frame is not None:
        if "SimpleITK" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _stop_native_work(frame) -> None:
    """Ask a running SimpleITK registration or filter (found in the callers' locals) to stop
    early, so the interrupt lands within an iteration rather than after convergence."""
    import SimpleITK as sitk

    while frame is not None:
        for value in list(frame.f_locals.values()):
            try:
                if isinstance(value, sitk.ImageRegistrationMethod):
                    value.StopRegistration()
                elif isinstance(value, sitk.ProcessObject):
                    value.Abort()
            except Exception:  # noqa: BLE001, S110 - best effort; the checkpoints still stop
                pass
        frame = frame.f_back


def _handler(signum, frame) -> None:
    if not _PENDING:
        _PENDING.append(int(signum))
    if _in_native_callback(frame):
        _stop_native_work(frame)
        timer = threading.Timer(_RETRY_S, signal.raise_signal, (signum,))
        timer.daemon = True
        timer.start()
        return
    raise Interrupted(_PENDING[0])


def install_signal_handlers() -> dict:
    """SIGINT and SIGTERM raise Interrupted in the main thread (a no-op elsewhere); returns
    the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _PENDING.clear()
    return {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}


# --- one line per failure ----------------------------------------------------------------------
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


def _os_error_line(err: OSError) -> str | None:
    """One line for an environment error on a named file (permissions, full disk, ...)."""
    fix = _OS_FIXES.get(err.errno)
    if fix is None or not err.filename:
        return None
    reason = err.strerror or type(err).__name__
    return RicenetError(f"cannot be written or read ({reason})", err.filename, fix).one_line()


def _usage_line(err) -> str:
    """Click's usage error as one line (it prints usage, a hint and the error otherwise)."""
    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "ricecli"
    return (f"usage error: {_sentence(err.format_message())} "
            f"Fix: see '{path} --help'.")


def report_error(err: BaseException) -> int:
    """Print the one line a command shows for `err` (never a traceback); return its exit code.

    2: bad input or usage (our errors, click usage errors, unwritable paths); 1: internal error;
    130 / 143: interrupted by SIGINT / SIGTERM.
    """
    import typer

    if isinstance(err, typer.Exit):
        return err.exit_code
    signum = err.signum if isinstance(err, Interrupted) else pending_signal()
    if isinstance(err, (typer.Abort, KeyboardInterrupt)) and signum is None:
        signum = signal.SIGINT
    if signum is not None:  # also a RuntimeError that a swallowed Ctrl-C left behind
        line, code = "interrupted", Interrupted(signum).exit_code
    elif isinstance(err, RicenetError):
        line, code = f"error: {err.one_line()}", EXIT_REFUSED
    elif callable(getattr(err, "format_message", None)) and hasattr(err, "exit_code"):
        if not err.format_message().strip():  # no arguments at all: the help was shown
            return EXIT_REFUSED
        line, code = _usage_line(err), EXIT_REFUSED  # a usage error of (Typer's) click
    elif isinstance(err, OSError) and _os_error_line(err) is not None:
        line, code = f"error: {_os_error_line(err)}", EXIT_REFUSED
    else:
        first = (str(err).strip().splitlines() or [""])[0]
        line, code = f"internal error: {type(err).__name__}: {first} ({REPORT})", EXIT_INTERNAL
    print(line, file=sys.stderr, flush=True)
    return code


def run_app(app) -> None:
    """Run a Typer app so that every failure ends as one line and an exit code."""
    before = install_signal_handlers()
    try:
        code = app(prog_name="ricecli", standalone_mode=False)  # returns typer.Exit's code
        raise_if_interrupted()
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the last line of defence
        sys.exit(report_error(err))
    finally:  # an in-process caller (tests, notebooks) gets its own handlers back
        for sig, handler in before.items():
            signal.signal(sig, handler)
        _PENDING.clear()

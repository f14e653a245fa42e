"""Ctrl-C and SIGTERM: raise `Interrupted` in the main thread so that outputs are cleaned up.

A Python signal handler runs in the main thread between bytecodes. Raised inside a callback that
C++ invoked (SimpleITK's registration iteration command), the exception is printed with a
traceback and turned into a RuntimeError. So the handler raises only outside such callbacks;
inside one it records the signal and re-sends it shortly, until it lands in plain Python.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from ricecli.errors import EXIT_SIGINT, EXIT_SIGTERM

# what signal.signal returns and accepts: a function, SIG_DFL / SIG_IGN, or None (not from Python)
Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

_PENDING: list[int] = []
_RETRY_S = 0.05


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """SIGINT or SIGTERM arrived: unwind (cleaning staged outputs), exit 130 / 143."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__("interrupted")

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int]]:  # picklable across pools
        return (Interrupted, (self.signum,))

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM."""
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT


def pending_signal() -> int | None:
    """The signal that arrived and has not yet been acted on, if any."""
    return _PENDING[0] if _PENDING else None


def raise_if_interrupted() -> None:
    """Checkpoint: raise Interrupted when a signal arrived (e.g. one swallowed by C++ code)."""
    if _PENDING:
        raise Interrupted(_PENDING[0])


def _in_native_callback(frame: FrameType | None) -> bool:
    """True when `frame` runs inside a call into SimpleITK's wrapped C++ (a callback)."""
    while frame is not None:
        if "SimpleITK" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _stop_native_work(frame: FrameType | None) -> None:
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


def handle_signal(signum: int, frame: FrameType | None) -> None:
    """The SIGINT/SIGTERM handler: raise Interrupted, or defer it out of a C++ callback."""
    if not _PENDING:
        _PENDING.append(int(signum))
    if _in_native_callback(frame):
        _stop_native_work(frame)
        timer = threading.Timer(_RETRY_S, signal.raise_signal, (signum,))
        timer.daemon = True
        timer.start()
        return
    raise Interrupted(_PENDING[0])


def install_signal_handlers() -> dict[int, Handler]:
    """SIGINT and SIGTERM raise Interrupted in the main thread (a no-op elsewhere); returns
    the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _PENDING.clear()
    return {sig: signal.signal(sig, handle_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(before: dict[int, Handler]) -> None:
    """Put back the handlers `install_signal_handlers` replaced and forget a pending signal."""
    for sig, handler in before.items():
        signal.signal(sig, handler)
    _PENDING.clear()

"""One family of domain errors, each saying which file is wrong and how to fix it, and the exit
codes: 0 answer, 1 internal error, 2 refused input or usage, 3 QA failed (no label), 130/143
interrupted by SIGINT/SIGTERM (nothing partial left behind).

The CLI boundary that turns any failure into one line lives in ricecli/cli.py; Ctrl-C and
SIGTERM handling in ricecli/signals.py.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_REFUSED, EXIT_QA_FAILED = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_CODES_HELP = ("Exit codes: 0 answer; 1 internal error; 2 refused input or usage (one line "
                   "naming the file and the fix, nothing written); 3 ran but QA failed (no "
                   "label; JSON still written); 130/143 interrupted by Ctrl-C/SIGTERM (nothing "
                   "partial left).")


def sentence(text: str) -> str:
    """`text` as one sentence: whitespace collapsed, exactly one final period."""
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else f"{text}."


class RicenetError(Exception):
    """Bad input or usage. The CLI prints `str(err)` as one line and exits with code 2."""

    def __init__(self, problem: str, path: str | Path | None = None,
                 fix: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """`path: problem. Fix: fix` on one line."""
        # paths are quoted verbatim: a ".." in a path must stay "..", or the line names
        # another file; only the sentence ends are normalised
        where = f"{' '.join(self.path.split())}: " if self.path else ""
        fix = f" Fix: {' '.join(str(self.fix).split())}" if self.fix else ""
        return f"{where}{sentence(self.problem)}{fix}"


class InputError(RicenetError):
    """A file that cannot be used as given (missing, unreadable, wrong kind of image)."""


class DoseError(RicenetError):
    """A dose that cannot be taken as absolute Gy in the post-op frame."""


class OutputError(RicenetError):
    """An output location that would overwrite or mix with something else."""


class ModelError(RicenetError):
    """A model file that is missing, not a ricenet model, or mismatched with the data."""

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

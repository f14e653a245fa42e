"""Safe outputs: write into a temporary folder (or file) beside the target, rename on success.

The one atomic writer of the project (`staged_output` for folders, `write_atomic` and its
`write_text_atomic` / `write_bytes_atomic` shorthands for files): ricecli, train/ and export/.

Nothing half-written is ever left at the target (not on errors, Ctrl-C or SIGTERM either), an
existing output is replaced only with `overwrite`, and an output may never be, contain, or lie
inside an input: `input_paths` lists every input of a command, `check_output_dir` and
`check_output_file` refuse outputs against that list.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from ricecli.errors import OutputError
from ricecli.signals import raise_if_interrupted

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


class HasPaths(Protocol):
    """A case that names its input files (CaseInputs, a manifest's ManifestCase)."""

    def paths(self) -> list[Path]: ...


def input_paths(case_inputs: HasPaths | None = None, model: str | Path | None = None,
                manifest: str | Path | None = None, cases: Iterable[HasPaths] = (),
                extra: Iterable[str | Path | None] = ()) -> list[Path]:
    """Every input path of a command: a case's files (post-op, event, dose, --mask,
    --dose-frame), the --model file, a batch manifest and every file its cases name."""
    found: list[str | Path | None] = []
    if case_inputs is not None:
        found += list(case_inputs.paths())
    for case in cases:
        found += list(case.paths())
    found += [model, manifest, *extra]
    out: list[Path] = []
    seen: set[Path] = set()
    for item in found:
        if item is None or str(item) in ("", "-"):
            continue
        key = _resolved(item)
        if key not in seen:
            seen.add(key)
            out.append(Path(item))
    return out


def refuse_inputs(out: Path, inputs: Iterable[str | Path], what: str, option: str) -> None:
    """OutputError when the output `out` is an input, lies inside one, or holds one."""
    for item in inputs:
        src = _resolved(item)
        if out == src and what == "file":
            raise OutputError("the output would overwrite an input", out,
                              fix=f"choose another {option}")
        if out == src or src in out.parents:
            raise OutputError(f"the output {what} is an input or lies inside one", out,
                              fix=f"choose an {option} outside {src}")
        if out in src.parents:
            raise OutputError(f"the output {what} holds an input (replacing it would delete it)",
                              out, fix=f"choose an {option} that does not hold {src}")


def check_writable(out: Path, option: str = "--out") -> None:
    """OutputError unless `out`'s nearest existing ancestor is a folder we may write in."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"the output lies under {parent}, which is a file, not a folder", out,
                          fix=f"choose an {option} path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {parent} (permission denied)", out,
                          fix=f"choose an {option} in a folder you can write to")


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path], overwrite: bool,
                     option: str = "--out") -> Path:
    """The resolved output folder, or OutputError if writing there could touch an input."""
    out = _resolved(out_dir)
    refuse_inputs(out, inputs, "folder", f"{option} folder")
    if out.exists() and not out.is_dir():
        raise OutputError("the output exists and is not a folder", out,
                          fix=f"choose another {option} path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError("the output folder exists and is not empty", out,
                          fix=f"choose a new {option} folder, or pass --overwrite to replace it")
    check_writable(out, option)
    return out


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = (),
                      overwrite: bool = True, option: str = "--json") -> Path:
    """The resolved output file, or OutputError: an input, inside a folder input, a folder,
    an existing file without `overwrite`, or a place that cannot be written."""
    target = _resolved(path)
    refuse_inputs(target, inputs, "file", f"{option} path")
    if target.is_dir():
        raise OutputError("the output is a folder", target,
                          fix=f"give a file name for {option}, e.g. result.json")
    if target.exists() and not overwrite:
        raise OutputError("the output file exists", target,
                          fix="choose another path, or pass --overwrite to replace it")
    check_writable(target, option)
    return target


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the few renames that commit an output (delivered just after)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (ValueError, OSError):  # not the main thread, or no signal mask here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def staged_output(out_dir: str | Path, inputs: Iterable[str | Path] = (),
                  overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out_dir`; on success it replaces `out_dir`, else it vanishes."""
    out = check_output_dir(out_dir, list(inputs), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        raise_if_interrupted()  # a Ctrl-C that C++ code swallowed: do not commit
        with _signals_deferred():
            old = None
            if out.exists():
                old = out.with_name(f".{out.name}.{os.getpid()}.old")
                os.rename(out, old)
            os.rename(stage, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def write_atomic(path: str | Path, inputs: Iterable[str | Path] = (),
                 overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp file path beside `path`; it is renamed onto `path` only on success.

    The writer creates the temp file itself, so the output gets the usual permissions (umask).
    """
    target = check_output_file(path, list(inputs), overwrite, option="output")
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the extension: writers pick the format from it (.nii.gz, .json, ...)
    suffix = "".join(target.suffixes[-2:])
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        raise_if_interrupted()
        tmp.touch(exist_ok=True)  # a writer that wrote nothing commits an empty file
        with _signals_deferred():
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, inputs: Iterable[str | Path] = (),
                      overwrite: bool = True) -> Path:
    """Write a text file whole or not at all (temp file beside it, then rename); never an input."""
    with write_atomic(path, inputs, overwrite) as tmp:
        tmp.write_text(text)
    return _resolved(path)


def write_bytes_atomic(path: str | Path, data: bytes, inputs: Iterable[str | Path] = (),
                       overwrite: bool = True) -> Path:
    """Write a binary file whole or not at all (temp file beside it, then rename)."""
    with write_atomic(path, inputs, overwrite) as tmp:
        tmp.write_bytes(data)
    return _resolved(path)

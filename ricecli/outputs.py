"""Safe outputs: write into a temporary folder (or file) beside the target, rename on success.

Nothing half-written is ever left at the target, an existing non-empty folder is replaced only
with `overwrite`, and an output may never be, contain, or lie inside an input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ricecli.errors import OutputError


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path], overwrite: bool) -> Path:
    """The resolved output folder, or OutputError if writing there could touch an input."""
    out = _resolved(out_dir)
    for item in inputs:
        src = _resolved(item)
        if out == src or src in out.parents:
            raise OutputError("the output folder is an input or lies inside one", out,
                              fix=f"choose an --out folder outside {src}")
        if out in src.parents:
            raise OutputError("the output folder holds an input (replacing it would delete it)",
                              out, fix=f"choose an --out folder that does not hold {src}")
    if out.exists() and not out.is_dir():
        raise OutputError("the output exists and is not a folder", out,
                          fix="choose another --out path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError("the output folder exists and is not empty", out,
                          fix="choose a new --out folder, or pass --overwrite to replace it")
    return out


@contextlib.contextmanager
def staged_output(out_dir: str | Path, inputs: Iterable[str | Path] = (),
                  overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out_dir`; on success it replaces `out_dir`, else it vanishes."""
    out = check_output_dir(out_dir, list(inputs), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
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
    """Yield a temp file path beside `path`; it is renamed onto `path` only on success."""
    target = _resolved(path)
    for item in inputs:
        if target == _resolved(item):
            raise OutputError("the output file is an input", target, fix="choose another path")
    if target.exists() and not overwrite:
        raise OutputError("the output file exists", target,
                          fix="choose another path, or allow overwriting")
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the extension: writers pick the format from it (.nii.gz, .json, ...)
    suffix = "".join(target.suffixes[-2:])
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", suffix=suffix,
                               dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Walk a DICOM tree and read the headers a cohort needs, incrementally and in processes.

Every regular file under the root becomes one entry: its header facts (a small JSON-ready dict)
or why it is not used (not_dicom, unreadable). The index file in COHORT_DIR (JSON lines, keyed
by path, size and mtime_ns) lets a re-run read only new or changed files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from ricecli.cohort.facts import (
    READ_TAG_NUMBERS,
    SCAN_TAGS,
    SEQUENCE_TAG_NUMBERS,
    header_facts,
    raw_facts,
)
from ricecli.cohort.scan import scan_header
from ricecli.io.base import DICOM_SUFFIXES, READ_ERRORS

INDEX_FILE = ".cohort-index.jsonl"
INDEX_FORMAT = 1
SCAN_BYTES = 65536  # a header longer than this is read by pydicom


@dataclass(frozen=True)
class IndexRun:
    """The entries of every file under the root (sorted by path) and how many were read now."""

    entries: list[dict[str, Any]]
    read: int
    reused: int


def walk(root: Path) -> list[str]:
    """Every regular file under `root` as a sorted POSIX path relative to it (links to folders
    not followed, so no loops; hidden files included: a DICOM file may have any name)."""
    found, folders = [], [""]
    while folders:
        rel = folders.pop()
        with os.scandir(root / rel if rel else root) as items:
            for item in items:
                name = f"{rel}/{item.name}" if rel else item.name
                if item.is_dir(follow_symlinks=False):
                    folders.append(name)
                elif item.is_file():
                    found.append(name)
    return sorted(found)


def _pixel_bytes(facts: dict[str, Any]) -> int:
    """Bytes the (uncompressed) pixel data of a header needs; 0 when unknown."""
    try:
        return (int(facts["Rows"]) * int(facts["Columns"]) * int(facts.get("NumberOfFrames", 1))
                * int(facts.get("SamplesPerPixel", 1)) * int(facts["BitsAllocated"]) // 8)
    except (KeyError, ValueError):
        return 0


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom's warnings and log lines about invalid values, held back (the CLI prints one
    summary; skipped.csv gives each file's reason)."""
    logger = logging.getLogger("pydicom")
    disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = disabled


def read_entry(root: str, rel: str) -> dict[str, Any]:
    """One file's index entry: path, size, mtime_ns and its facts, or a skip code and reason."""
    path = Path(root, rel)
    st = os.stat(path)
    entry: dict[str, Any] = {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    preamble: bool | None = None  # None: the file could not even be opened
    try:
        with open(path, "rb") as f:
            head = f.read(SCAN_BYTES)
            preamble = head[128:132] == b"DICM"
            if not preamble and path.suffix.lower() not in DICOM_SUFFIXES:
                return {**entry, "skip": "not_dicom", "reason": "no DICOM preamble"}
            scanned = scan_header(head, SCAN_TAGS, SEQUENCE_TAG_NUMBERS) if preamble else None
            if scanned is not None:
                found, pixels_at, syntax = scanned
                facts = raw_facts(found)
            else:  # the unusual file: pydicom reads it
                f.seek(0)
                with quiet_pydicom():  # its warnings on odd values: the facts say enough
                    ds = pydicom.dcmread(f, stop_before_pixels=True,
                                         specific_tags=READ_TAG_NUMBERS, force=True)
                    pixels_at = f.tell()
                    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) \
                        if hasattr(ds, "file_meta") else ""
                    facts = header_facts(ds)
    except READ_ERRORS as err:
        code = "not_dicom" if preamble is False else "unreadable"
        return {**entry, "skip": code, "reason": f"header cannot be read ({type(err).__name__})"}
    if "SOPClassUID" not in facts and "Modality" not in facts:
        code = "unreadable" if preamble else "not_dicom"
        return {**entry, "skip": code, "reason": "no SOPClassUID or Modality in the header"}
    if preamble and "SOPInstanceUID" not in facts:
        return {**entry, "skip": "unreadable", "reason": "header incomplete: no SOPInstanceUID "
                f"in its {st.st_size} bytes (truncated or damaged)"}
    need = _pixel_bytes(facts)
    if need and pixels_at >= st.st_size:
        return {**entry, "skip": "unreadable", "reason": "truncated: the file ends before its "
                "pixel data"}
    compressed = bool(syntax) and pydicom.uid.UID(syntax).is_compressed
    if need and not compressed and pixels_at < st.st_size and st.st_size - pixels_at < need:
        return {**entry, "skip": "unreadable",
                "reason": f"truncated: {st.st_size - pixels_at} bytes of pixel data, {need} needed"}
    return {**entry, "facts": facts}


def _read_chunk(root: str, rels: list[str]) -> list[dict[str, Any]]:
    return [read_entry(root, rel) for rel in rels]


def read_entries(root: Path, rels: list[str], jobs: int) -> list[dict[str, Any]]:
    """Entries of `rels` (same order), read in `jobs` processes (any jobs: the same entries)."""
    if jobs <= 1 or len(rels) < 64:
        return _read_chunk(str(root), rels)
    size = max(16, len(rels) // (jobs * 8))
    chunks = [rels[i:i + size] for i in range(0, len(rels), size)]
    out: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(_read_chunk, [str(root)] * len(chunks), chunks):
            out += part
    return out


def load_index(path: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Entries of an index file by path; an absent, damaged, other-format or other-root file
    reads as empty (every file is read again)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0]) if lines else {}
        if head.get("format") != INDEX_FORMAT or head.get("root") != str(root):
            return {}
        entries = (json.loads(line) for line in lines[1:] if line.strip())
        return {e["path"]: e for e in entries}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def index_text(root: Path, entries: Iterable[dict[str, Any]]) -> str:
    """The index file's text: a header line, then one compact JSON line per file."""
    head = json.dumps({"format": INDEX_FORMAT, "root": str(root)})
    lines = [json.dumps(e, sort_keys=True, separators=(",", ":")) for e in entries]
    return "\n".join([head, *lines]) + "\n"


def index_tree(root: Path, previous: dict[str, dict[str, Any]], jobs: int = 1) -> IndexRun:
    """Entries of every file under `root`: reused from `previous` when path, size and mtime_ns
    match, read now otherwise."""
    rels = walk(root)
    kept: dict[str, dict[str, Any]] = {}
    todo = []
    for rel in rels:
        old = previous.get(rel)
        if old is None:
            todo.append(rel)
            continue
        st = os.stat(root / rel)
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            kept[rel] = old
        else:
            todo.append(rel)
    for entry in read_entries(root, todo, jobs):
        kept[entry["path"]] = entry
    return IndexRun([kept[rel] for rel in rels], read=len(todo), reused=len(rels) - len(todo))

"""Write small manifest CSVs for the manifest and batch tests."""

from __future__ import annotations

import csv
from pathlib import Path

HEADER = ("case_id", "post_op", "event", "dose", "label")


def write_manifest(folder: Path, rows: list, header: tuple = HEADER) -> Path:
    """folder/manifest.csv with `header` and `rows` (each a sequence of cells)."""
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path

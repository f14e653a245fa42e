"""Explain's files: occlusion[_<channel>].nii.gz on the event grid, overview.png, explain.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ricecli.explain.occlusion import ExplainResult
from ricecli.outputs.overview import write_overview

if TYPE_CHECKING:
    from ricecli.prepare import PreparedCase


def write_explain(result: ExplainResult, case: PreparedCase, folder: str | Path,
                  classes: Sequence[str],
                  extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """Write the maps, overview.png and explain.json into `folder`; return the JSON record."""
    import SimpleITK as sitk

    folder = Path(folder)
    for name, img in result.event_maps.items():
        stem = "occlusion" if name == "all" else f"occlusion_{name}"
        sitk.WriteImage(img, str(folder / f"{stem}.nii.gz"), True)
    write_overview(case.event_image, result.event_maps["all"], folder / "overview.png",
                   result.peak_mm,
                   title=f"p({result.target}) = {result.probabilities[result.target]:.3f}   "
                         f"occlusion sensitivity for {result.target}")
    record = {**result.summary(classes), **(extra or {})}
    (folder / "explain.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record

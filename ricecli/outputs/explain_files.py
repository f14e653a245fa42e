"""Explain's files: occlusion[_<channel>].nii.gz on the event grid, overview.png, explain.json.

overview.png shows the same calibrated p as every other output, is cut through the enhancing
lesion and through the map's strongest region, and paints nothing when the map's strongest
change is smaller than the ensemble members' own spread (it could not change the answer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ricecli.explain.lesion import Lesion, centre_mm, map_on_lesion
from ricecli.explain.maps import to_event_grid
from ricecli.explain.occlusion import ExplainResult
from ricecli.outputs.overview import CONVENTION, DP_SCALE, Row, write_overview

if TYPE_CHECKING:
    from ricecli.prepare import PreparedCase


def quiet_note(max_abs: float, spread: float | None) -> str | None:
    """The sentence shown instead of the map when no region changes the answer, else None."""
    if spread is None or max_abs >= spread:
        return None
    return (f"no region changes the answer: the map's strongest |delta p| {max_abs:.3f} is "
            f"below the members' own spread (SD {spread:.3f}); map not painted")


def overview_rows(result: ExplainResult, case: PreparedCase, lesion: Lesion,
                  max_abs: float) -> list[Row]:
    """Row 1 through the lesion (when there is one), row 2 through the strongest region."""
    rows = []
    if not lesion.empty:
        how = "found: new enhancement post-op -> event" if lesion.source == "found" \
            else "given: --lesion-mask"
        rows.append(Row(f"row 1: through the enhancing lesion ({how}), outlined green",
                        centre_mm(lesion, case)))
    rows.append(Row(f"row {len(rows) + 1}: through the map's strongest region "
                    f"(|delta p| {max_abs:.3f}), ringed", result.peak_mm))
    return rows


def legend_lines(target: str, top_in_lesion: float, lesion: Lesion) -> list[str]:
    """What the colours, outline and rings mean, and how much of the map lies on the lesion."""
    lines = [f"delta p = p({target}) - p({target} with the region hidden). Red: hiding the "
             f"region lowers p({target}) (it supports {target}); blue: hiding it raises "
             f"p({target}).",
             f"Green outline: the enhancing lesion; white ring: the row's centre; {CONVENTION}."]
    if lesion.empty:
        lines.append("No enhancing lesion found (no new enhancement between post-op and event "
                     "inside the brain); give one with --lesion-mask.")
    else:
        lines.append(f"Top 5 % of the map (by |delta p|): "
                     f"{top_in_lesion:.0%} inside the lesion. "
                     "Occlusion maps show what the model used, not where the disease is.")
    return lines


def write_explain(result: ExplainResult, case: PreparedCase, folder: str | Path,
                  classes: Sequence[str], *, p_shown: float, spread: float | None,
                  lesion: Lesion, extra: Mapping[str, object] | None = None
                  ) -> dict[str, object]:
    """Write the maps, overview.png and explain.json into `folder`; return the JSON record.

    `p_shown`: the calibrated p(target) of the result record (the one number every output
    shows); `spread`: the members' SD of that p; `lesion`: found or given, in model space.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    for name, img in result.event_maps.items():
        stem = "occlusion" if name == "all" else f"occlusion_{name}"
        sitk.WriteImage(img, str(folder / f"{stem}.nii.gz"), True)
    model_map = result.model_maps.maps["all"]
    max_abs = float(np.abs(model_map).max()) if model_map.size else 0.0
    on_lesion = map_on_lesion(model_map, lesion, case.brain_mask)
    share = float(on_lesion["top_fraction_in_lesion"])  # type: ignore[arg-type]
    quiet = quiet_note(max_abs, spread)
    title = (f"p({result.target}) = {p_shown:.3f} (calibrated)   occlusion sensitivity for "
             f"{result.target}")
    rows = overview_rows(result, case, lesion, max_abs)
    outline = None if lesion.empty else to_event_grid(
        lesion.mask.astype(np.float32), case.reference, case.event_image, case.model_to_event)
    write_overview(case.event_image, result.event_maps["all"], folder / "overview.png", rows,
                   title, legend_lines(result.target, share, lesion), lesion=outline,
                   quiet=quiet)
    summary = result.summary(classes)
    record = {**summary, "target_probability": p_shown,
              "overview": {"title": title, "rows": [{"name": r.name, "lps_mm": list(r.point_mm)}
                                                    for r in rows],
                           "colour_scale_delta_p": [-DP_SCALE, DP_SCALE],
                           "painted": quiet is None, "note": quiet},
              "max_abs_delta_p": round(max_abs, 6), "members_sd_p": spread,
              "map_vs_lesion": on_lesion, **(extra or {})}
    (folder / "explain.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record

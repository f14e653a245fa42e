"""The event scan's enhancing lesion in model space, and how much of the map falls on it.

The lesion is what a reader looks at first, so the overview is cut through it and explain.json
says whether the map's strongest voxels lie on it. Found from the prepared channels (new
enhancement between post-op and event inside the brain) or given as a mask (`--lesion-mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ricecli.errors import InputError

if TYPE_CHECKING:
    import SimpleITK as sitk

    from ricecli.prepare import PreparedCase

ENHANCEMENT_Z = 1.0  # new enhancement: event - post-op, above its 15 mm brain mean, in SDs
BRIGHT_Z = 1.0  # ... where the event scan is brighter than the mean brain (not fluid, not edge)
TREND_MM = 15.0  # scale of slow intensity drifts (bias field) removed from the difference
TOP_SHARE = 0.05  # "the map's strongest voxels": top 5 % of brain voxels by |delta p|
FOUND_RULE = (f"largest connected region where event - post-op T1c (z-scored in the brain, "
              f"minus its {TREND_MM:.0f} mm local mean) > {ENHANCEMENT_Z} SD and the event "
              f"T1c > {BRIGHT_Z} SD, inside the brain (model space)")


@dataclass(frozen=True)
class Lesion:
    """A lesion mask in model space (z, y, x) and where it came from ("found" or a path)."""

    mask: np.ndarray
    source: str

    @property
    def empty(self) -> bool:
        """True when no voxel is inside (no new enhancement found)."""
        return not bool(self.mask.any())


@dataclass(frozen=True)
class GivenMask:
    """A lesion mask read from `--lesion-mask` (on its own grid), before the case is prepared."""

    image: sitk.Image
    path: Path


def read_lesion_mask(path: str | Path) -> GivenMask:
    """Read a 0/1 lesion mask (exit 2 naming the file when it cannot be one)."""
    from ricecli.io.volume import read_mask

    return GivenMask(read_mask(path), Path(path))


def find_lesion(case: PreparedCase) -> Lesion:
    """The largest region of new enhancement between post-op and event (see FOUND_RULE)."""
    brain = np.asarray(case.brain_mask) > 0
    event, post_op = case.channels["event"], case.channels["post_op"]
    diff = np.where(brain, event.astype(np.float64) - post_op, 0.0)
    sigma_vox = [TREND_MM / s for s in reversed(case.reference.GetSpacing())]  # (z, y, x)
    weight = ndimage.gaussian_filter(brain.astype(np.float64), sigma_vox)
    trend = ndimage.gaussian_filter(diff, sigma_vox) / np.maximum(weight, 1e-3)
    new = ((diff - trend) > ENHANCEMENT_Z) & (event > BRIGHT_Z) & ndimage.binary_erosion(brain)
    return Lesion(largest_component(new), "found")


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean mask (all False when it is empty)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = ndimage.sum_labels(mask, labels, range(1, n + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def lesion_from_mask(mask: sitk.Image, path: str | Path, case: PreparedCase) -> Lesion:
    """A user's lesion mask (any grid in the event scan's world) carried into model space."""
    import SimpleITK as sitk

    moved = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), case.reference,
                          case.model_to_event, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    arr = sitk.GetArrayFromImage(moved) > 0
    if not arr.any():
        raise InputError("the lesion mask lies outside the model's field of view once "
                         "registered to the event scan", path,
                         fix="give a mask drawn on the event scan (same patient, same study)")
    return Lesion(arr, str(path))


def centre_mm(lesion: Lesion, case: PreparedCase) -> tuple[float, float, float]:
    """The lesion's centre of mass as an LPS point (mm) in the event scan's world."""
    z, y, x = ndimage.center_of_mass(lesion.mask)
    model_pt = case.reference.TransformContinuousIndexToPhysicalPoint([x, y, z])
    px, py, pz = case.model_to_event.TransformPoint(model_pt)
    return float(px), float(py), float(pz)


def map_on_lesion(delta_p: np.ndarray, lesion: Lesion, brain: np.ndarray) -> dict[str, object]:
    """The map's value inside the lesion vs elsewhere in the brain, and whether its top 5 %
    (by |delta p|, brain voxels) lies on the lesion; all in model space."""
    brain = np.asarray(brain) > 0
    values = np.asarray(delta_p, np.float64)
    inside, elsewhere = lesion.mask & brain, brain & ~lesion.mask
    if lesion.mask.any() and not inside.any():
        inside = lesion.mask  # a mask drawn at the brain's edge still counts
    top = top_voxels(values, brain)

    def part(where: np.ndarray) -> dict[str, float | int | None]:
        v = values[where]
        return {"voxels": int(v.size), "mean_delta_p": round(float(v.mean()), 6) if v.size
                else None, "max_abs_delta_p": round(float(np.abs(v).max()), 6) if v.size
                else None}

    share = float((top & inside).sum() / top.sum()) if top.any() else 0.0
    return {"source": lesion.source, "lesion": part(inside), "elsewhere": part(elsewhere),
            "top_share": TOP_SHARE, "top_fraction_in_lesion": round(share, 4),
            "top_touches_lesion": bool((top & inside).any()),
            "rule": FOUND_RULE if lesion.source == "found" else "given (--lesion-mask)"}


def top_voxels(delta_p: np.ndarray, brain: np.ndarray, share: float = TOP_SHARE) -> np.ndarray:
    """The brain voxels whose |delta p| is in the top `share` (none when the map is all 0)."""
    magnitude = np.where(brain, np.abs(delta_p), 0.0)
    values = magnitude[brain]
    if values.size == 0 or values.max() <= 0:
        return np.zeros(brain.shape, bool)
    cut = float(np.quantile(values, 1.0 - share))
    return np.asarray(brain & (magnitude >= cut) & (magnitude > 0))


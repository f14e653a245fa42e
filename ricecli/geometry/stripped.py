"""Is a scan already skull-stripped, and if so where is its brain? No network needed.

A skull-stripped scan is a brain alone on an exactly constant background; skull-on scans show
noisy air or a bright rim of scalp fat. Thresholds: ricecli.qa.LIMITS, tests/test_stripped.py.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ricecli.qa import LIMITS

_CONN26 = np.ones((3, 3, 3), dtype=bool)
STRIPPED_SAMPLE_MM = 2.0  # judged on a voxel subsample no finer than this
DARK_LEVEL = 0.05  # dark: under this share of the object's p99
SHELL_MM = 4.0  # the rim whose brightness tells scalp fat


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected object of a boolean mask (the mask itself when it has one)."""
    labels, n = ndimage.label(mask, structure=_CONN26)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _subsample(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (z, y, x) strided to about STRIPPED_SAMPLE_MM, and their spacing (z, y, x)."""
    spacing = np.array(image.GetSpacing(), dtype=float)[::-1]
    step = np.maximum(1, np.floor(STRIPPED_SAMPLE_MM / spacing)).astype(int)
    voxels = sitk.GetArrayViewFromImage(image)[::step[0], ::step[1], ::step[2]]
    return np.asarray(voxels, dtype=np.float32), spacing * step


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(1, np.round(radius_mm / spacing)).astype(int)
    z, y, x = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    return (z * spacing[0]) ** 2 + (y * spacing[1]) ** 2 + (x * spacing[2]) ** 2 <= (
        radius_mm ** 2 + 1e-6)


def skull_stripped_evidence(image: sitk.Image) -> dict[str, float]:
    """The measures `looks_skull_stripped` decides on (for QA records and calibration)."""
    a, spacing = _subsample(image)
    border = np.concatenate([a[[0, -1]].ravel(), a[:, [0, -1]].ravel(), a[:, :, [0, -1]].ravel()])
    values, counts = np.unique(border, return_counts=True)
    background = values[int(np.argmax(counts))]
    evidence = {"border_constant_share": float(counts.max() / border.size),
                "object_share": 0.0, "box_fill": 1.0, "dark_share": 1.0,
                "shell_ratio": float("inf")}
    foreground = a != background
    if foreground.sum() < 27:
        return evidence
    obj = largest_component(foreground)
    evidence["object_share"] = float(obj.sum() / foreground.sum())
    obj = ndimage.binary_fill_holes(obj)
    box = ndimage.find_objects(obj.astype(np.uint8))[0]
    evidence["box_fill"] = float(obj[box].mean())
    values = a[obj] - background
    evidence["dark_share"] = float(np.mean(values < DARK_LEVEL * np.percentile(values, 99)))
    inner = ndimage.binary_erosion(obj, _ball(SHELL_MM, spacing), border_value=1)
    shell = obj & ~inner
    if inner.any() and shell.any():
        centre = float(np.median(a[inner]) - background)
        rim = float(np.percentile(a[shell], 90) - background)
        evidence["shell_ratio"] = rim / centre if centre > 0 else float("inf")
    return evidence


def looks_skull_stripped(image: sitk.Image) -> bool:
    """True when the scan is already a brain alone: an exactly constant background around one
    brain-shaped object without a bright rim (skull-on scans show noisy air or scalp fat)."""
    e = skull_stripped_evidence(image)
    return (e["border_constant_share"] >= LIMITS.stripped_border_constant
            and e["object_share"] >= LIMITS.stripped_object_share
            and e["box_fill"] <= LIMITS.stripped_max_box_fill
            and e["dark_share"] <= LIMITS.stripped_max_dark_share
            and e["shell_ratio"] <= LIMITS.stripped_max_shell_ratio)


def stripped_brain(image: sitk.Image, spacing_mm: float = 2.0) -> sitk.Image:
    """The brain of an already skull-stripped scan, on a ~`spacing_mm` grid of the image's own
    orientation (what registration and model space need, at an eighth of the 1 mm cost): the
    largest object apart from the constant background (the most common border value), holes
    filled; uint8 0/1."""
    a = sitk.GetArrayViewFromImage(image)
    border = np.concatenate([a[[0, -1]].ravel(), a[:, [0, -1]].ravel(), a[:, :, [0, -1]].ravel()])
    values, counts = np.unique(border, return_counts=True)
    factors = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    inside = sitk.Cast(image != float(values[int(np.argmax(counts))]), sitk.sitkFloat32)
    share = sitk.BinShrink(inside, factors) if max(factors) > 1 else inside
    foreground = sitk.GetArrayViewFromImage(share) >= 0.5
    brain = ndimage.binary_fill_holes(largest_component(foreground)) if foreground.any() \
        else foreground
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(share)
    return mask

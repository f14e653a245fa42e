"""Brain extraction for skull-on T1 scans, torch-free: deepbet's two networks under ONNX Runtime.

deepbet 1.0.2 (Fisch et al. 2024, MIT; see data/brain/NOTICE) finds the brain in two passes:
a coarse mask at 128^3 gives a crop (its box + 10% margin), a second network segments the crop
resized to a cube. This module reproduces its pre- and post-processing in numpy/scipy, with
the networks converted to ONNX by scripts/convert_deepbet.py. `looks_skull_stripped` tells an
already skull-stripped scan (exactly constant background around a brain) from a skull-on one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ricecli.errors import InputError, ModelError

BRAIN_DIR = Path(__file__).resolve().parents[1] / "data" / "brain"
BBOX_MODEL = "deepbet_bbox.onnx"
BRAIN_MODEL = "deepbet_brain.onnx"
SMALL_GRID = 128  # deepbet's coarse pass
GRID = 192  # fine pass on a GRID^3 cube (deepbet: 256; 192 is 2.4x faster, see docs)
BBOX_MARGIN = 0.1  # of the coarse box's size, on each side
THRESHOLD = 0.5
ORT_THREADS = 2  # fixed, so that every machine computes the same bits
_CONN26 = np.ones((3, 3, 3), dtype=bool)

# --- geometry: deepbet works on the closest RAS+ voxel order (nibabel's as_closest_canonical)


def _ras_axes(image: sitk.Image) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For RAS+ axes 0..2: which voxel axis (i,j,k) runs along it, and whether it is reversed.

    Greedy on the largest direction cosine, as nibabel's io_orientation does.
    """
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    cosines = np.abs(np.diag([-1.0, -1.0, 1.0]) @ direction)  # LPS -> RAS rows
    signs = np.sign(np.diag([-1.0, -1.0, 1.0]) @ direction)
    source = [0, 0, 0]
    flip = [False, False, False]
    free = cosines.copy()
    for _ in range(3):
        world, voxel = np.unravel_index(int(np.argmax(free)), free.shape)
        source[world] = int(voxel)
        flip[world] = bool(signs[world, voxel] < 0)
        free[world, :] = -1
        free[:, voxel] = -1
    return tuple(source), tuple(flip)


def _to_ras(voxels_ijk: np.ndarray, source: tuple[int, ...], flip: tuple[bool, ...]) -> np.ndarray:
    out = np.transpose(voxels_ijk, source)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


def _from_ras(ras: np.ndarray, source: tuple[int, ...], flip: tuple[bool, ...]) -> np.ndarray:
    ras = ras[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
    return np.transpose(ras, np.argsort(source))


# --- deepbet's steps, in numpy


def _nearest_exact(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch.nn.functional.interpolate(mode='nearest-exact'): source = floor((i + .5) * in/out)."""
    index = []
    for n_in, n_out in zip(volume.shape, shape, strict=True):
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale)
        index.append(np.minimum(src.astype(np.int64), n_in - 1))
    return volume[np.ix_(*index)]


def _normalize(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    """deepbet's normalize: clip to the 0.5-99.5% range, standardise, map to ImageNet's scale.

    float32 in place with float64 sums (the crop volume is ~17 M voxels); std is unbiased.
    """
    x = volume - np.float32(low)
    x *= np.float32(1.0 / max(high - low, 1e-12))
    np.clip(x, 0.0, 1.0, out=x)
    n = x.size
    mean = float(x.sum(dtype=np.float64)) / n
    var = float(np.square(x).sum(dtype=np.float64)) - n * mean * mean
    std = float(np.sqrt(max(var, 0.0) / max(n - 1, 1))) or 1.0
    x *= np.float32(0.226 / std)
    x += np.float32(0.449 - 0.226 * mean / std)
    return x[None, None]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=_CONN26)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _crop_box(mask_small: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """deepbet's get_bbox_with_margin: the coarse mask's box, scaled to `shape`, +10% a side."""
    box = []
    for axis, n in enumerate(shape):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.nonzero(mask_small.mean(axis=others) > 0.02)[0]
        if hit.size == 0:
            raise InputError("brain extraction found no brain in this scan",
                             fix="give a brain mask with --mask, or use --no-brain-extraction")
        scale = np.float32(n) / np.float32(mask_small.shape[axis])
        centre = np.float32((hit.max() + 1 + hit.min()) / 2) * scale
        size = np.float32(hit.max() + 1 - hit.min()) * scale * np.float32(1 + 2 * BBOX_MARGIN)
        centre, size = float(np.round(centre)), float(np.round(size))
        box.append(slice(max(0, int(centre - size / 2)), min(n, int(centre + size / 2))))
    return tuple(box)


@lru_cache(maxsize=2)
def _session(name: str):
    """One ONNX Runtime CPU session per network and process."""
    import onnxruntime as ort

    path = BRAIN_DIR / name
    if not path.is_file():
        raise ModelError("the brain-extraction network is missing from this installation",
                         path, fix="reinstall ricecli (scripts/convert_deepbet.py rebuilds it)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _brain_probability(name: str, x: np.ndarray) -> np.ndarray:
    """The network's brain channel (softmax channel 1) for one normalised volume."""
    return _session(name).run(None, {"image": x})[0][0, 1]


def brain_mask_ras(ras: np.ndarray, grid: int = GRID) -> np.ndarray:
    """deepbet's run_model + postprocess on a RAS+ float32 volume: bool brain mask, same shape."""
    x = np.nan_to_num(ras.astype(np.float32, copy=False))
    small = _nearest_exact(x, (SMALL_GRID,) * 3)
    low, high = (float(q) for q in np.quantile(small, [0.005, 0.995]))
    if not high > low:
        raise InputError("brain extraction found no brain in this scan: it has no contrast",
                         fix="check the file is the T1 scan, or give a brain mask with --mask")
    coarse = _brain_probability(BBOX_MODEL, _normalize(small, low, high)) > THRESHOLD
    if not coarse.any():
        raise InputError("brain extraction found no brain in this scan",
                         fix="give a brain mask with --mask, or use --no-brain-extraction")
    box = _crop_box(_largest_component(coarse).astype(np.float32), x.shape)
    crop = x[box]
    fine = _brain_probability(BRAIN_MODEL, _normalize(_nearest_exact(crop, (grid,) * 3), low,
                                                       high)) > THRESHOLD
    inside = _nearest_exact(fine, crop.shape)
    inside = ndimage.binary_fill_holes(_largest_component(inside))
    mask = np.zeros(x.shape, dtype=bool)
    mask[box] = inside
    return mask


def extract_brain(image: sitk.Image) -> sitk.Image:
    """A uint8 0/1 brain mask on `image`'s own grid (deepbet's networks, ONNX Runtime, CPU)."""
    return brain_mask_on_grid(image, GRID)


def brain_mask_on_grid(image: sitk.Image, grid: int) -> sitk.Image:
    """extract_brain with the fine pass on a grid^3 cube (256 reproduces deepbet exactly)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("brain extraction needs a 3D scalar image",
                         fix="give a single 3D T1 volume")
    source, flip = _ras_axes(image)
    voxels = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)  # i, j, k
    ras = _to_ras(voxels.astype(np.float32), source, flip)
    mask_ijk = _from_ras(brain_mask_ras(ras, grid), source, flip)
    mask = sitk.GetImageFromArray(np.ascontiguousarray(mask_ijk.transpose(2, 1, 0), np.uint8))
    mask.CopyInformation(image)
    return mask


# --- is the scan already skull-stripped?

STRIPPED_SAMPLE_MM = 2.0  # judged on a voxel subsample no finer than this
BORDER_CONSTANT_SHARE = 0.6  # stripped: the image border is one exact value ...
OBJECT_SHARE = 0.95  # ... around one object holding (nearly) all other voxels,
MAX_BOX_FILL = 0.75  # ... brain-shaped (an ellipsoid fills 0.52 of its box; a noisy FOV ~1),
MAX_DARK_SHARE = 0.15 # ... made of tissue, not air: voxels under 5% of its p99 (noise) are few,
DARK_LEVEL = 0.05
MAX_SHELL_RATIO = 1.6  # ... with no bright rim (scalp fat): p90 of its 4 mm rim / inner median
SHELL_MM = 4.0


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
    obj = _largest_component(foreground)
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
    return (e["border_constant_share"] >= BORDER_CONSTANT_SHARE
            and e["object_share"] >= OBJECT_SHARE
            and e["box_fill"] <= MAX_BOX_FILL
            and e["dark_share"] <= MAX_DARK_SHARE
            and e["shell_ratio"] <= MAX_SHELL_RATIO)


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
    brain = ndimage.binary_fill_holes(_largest_component(foreground)) if foreground.any() \
        else foreground
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(share)
    return mask

"""Brain extraction for skull-on T1 scans, torch-free: deepbet's two networks under ONNX Runtime.

deepbet 1.0.2 (Fisch et al. 2024, MIT; see data/brain/NOTICE) finds the brain in two passes:
a coarse mask at 128^3 gives a crop (its box + 10% margin), a second network segments the crop
resized to a cube. This module reproduces its pre- and post-processing in numpy/scipy, with
the networks converted to ONNX by scripts/convert_deepbet.py. Scans that are already
skull-stripped need no network: geometry/stripped.py tells them apart and finds their brain.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ricecli.errors import InputError, ModelError
from ricecli.geometry.stripped import largest_component

if TYPE_CHECKING:  # onnxruntime is imported when a network first runs (quick CLI start)
    from onnxruntime import InferenceSession

BRAIN_DIR = Path(__file__).resolve().parents[1] / "data" / "brain"
BBOX_MODEL = "deepbet_bbox.onnx"
BRAIN_MODEL = "deepbet_brain.onnx"
SMALL_GRID = 128  # deepbet's coarse pass
GRID = 192  # fine pass on a GRID^3 cube (deepbet: 256; 192 is 2.4x faster, see docs)
BBOX_MARGIN = 0.1  # of the coarse box's size, on each side
THRESHOLD = 0.5
ORT_THREADS = 2  # fixed, so that every machine computes the same bits

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


# The process-global cache of this module: one ONNX Runtime session per deepbet network file
# name (BBOX_MODEL, BRAIN_MODEL), built on first use and kept for the life of the process, so a
# batch or the demo loads each network once. Only `session` fills it; `clear_sessions` empties
# it (tests that point BRAIN_DIR elsewhere).
_SESSIONS: dict[str, InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()


def session(name: str) -> InferenceSession:
    """The cached ONNX Runtime CPU session of one network (built on first use)."""
    with _SESSIONS_LOCK:
        if name not in _SESSIONS:
            _SESSIONS[name] = _new_session(name)
        return _SESSIONS[name]


def clear_sessions() -> None:
    """Forget every cached session (the next extraction builds them again)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def _new_session(name: str) -> InferenceSession:
    """An ONNX Runtime CPU session on a fixed thread count, so every machine gets the same bits."""
    from ricecli.runtime import cpu_session

    path = BRAIN_DIR / name
    if not path.is_file():
        raise ModelError("the brain-extraction network is missing from this installation",
                         path, fix="reinstall ricecli (scripts/convert_deepbet.py rebuilds it)")
    return cpu_session(path, ORT_THREADS, spin=False)  # no spinning: the cores are shared


def _brain_probability(name: str, x: np.ndarray) -> np.ndarray:
    """The network's brain channel (softmax channel 1) for one normalised volume."""
    return session(name).run(None, {"image": x})[0][0, 1]


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
    box = _crop_box(largest_component(coarse).astype(np.float32), x.shape)
    crop = x[box]
    fine = _brain_probability(BRAIN_MODEL, _normalize(_nearest_exact(crop, (grid,) * 3), low,
                                                       high)) > THRESHOLD
    inside = _nearest_exact(fine, crop.shape)
    inside = ndimage.binary_fill_holes(largest_component(inside))
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

"""Skull-on scans: the tissue a T1c shows around the brain (CSF and meninges, skull with dark
cortical tables and moderate marrow, temporalis muscle, bright subcutaneous fat, skin) and a
neck below, layered by distance from the simulated brain on a padded working grid.

Thicknesses vary smoothly over the head (low-order functions of the direction from the head
centre) and between patients (the head's own seeded stream), so no two heads are alike; the
shell is closed around the brain, as the skull is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ricecli.simulate.anatomy import HEAD_CENTRE_MM, Anatomy, distance_to, grid_coords

HEAD_PAD_MM = 28.0  # room around the working grid for the scalp (brain edge to skin <= ~25 mm)
NECK_PAD_MM = 40.0  # more neck below, so that tilted fields of view rarely cut it short
NECK_SHOWN_MM = 30.0  # the field of view reaches this far below the brain's lowest point
NECK_TOP_Z_MM = -35.0  # LPS z above which the neck merges into the head (below the temporal lobes)
NECK_BLEND_MM = 14.0  # width of the smooth junction between head and neck


@dataclass
class Head:
    """The tissue outside the brain on the padded working grid (template units, WM ~0.87)."""

    grid: sitk.Image  # the working grid grown on every side (more below, for the neck)
    offset: tuple  # (z, y, x) index of the working grid's first voxel in `grid`
    layers: np.ndarray  # float32 (z, y, x): 0 inside the brain and in air
    corners_mm: np.ndarray  # (8, 3) corners of the box a scan covers (head, top of the neck)
    params: dict

    def embed(self, brain_image: np.ndarray) -> np.ndarray:
        """The whole head: the brain image (working grid) inside, the layers around it."""
        out = self.layers.copy()
        inner = out[tuple(slice(o, o + n) for o, n in zip(self.offset, brain_image.shape,
                                                            strict=True))]
        np.maximum(inner, brain_image, out=inner)
        return out

    def image(self, brain_image: np.ndarray) -> sitk.Image:
        """`embed` as a float32 image on the padded grid, ready for the scanner to resample."""
        img = sitk.GetImageFromArray(self.embed(brain_image))
        img.CopyInformation(self.grid)
        return img


def padded_grid(grid: sitk.Image, pad: int, below: int) -> sitk.Image:
    """The identity-direction grid grown by `pad` voxels on every side and `below` more at the
    bottom (low z)."""
    size = [n + 2 * pad for n in grid.GetSize()]
    size[2] += below
    out = sitk.Image(size, sitk.sitkUInt8)
    h = np.asarray(grid.GetSpacing())
    out.SetSpacing(grid.GetSpacing())
    out.SetOrigin((np.asarray(grid.GetOrigin()) - h * np.array([pad, pad, pad + below])).tolist())
    out.SetDirection(grid.GetDirection())
    return out


def _shape_field(rng: np.random.Generator, u: tuple, amplitude: float) -> np.ndarray:
    """A smooth random function of the direction u (degree-2 polynomial), ~N(0, amplitude)."""
    ux, uy, uz = u
    terms = (ux, uy, uz, ux * ux - 1 / 3, uy * uy - 1 / 3, uz * uz - 1 / 3, ux * uy, uy * uz,
             ux * uz)
    coef = rng.normal(0.0, 1.0, size=len(terms)) * amplitude / 0.55
    return sum(np.float32(c) * t for c, t in zip(coef, terms, strict=True))


def _ramp(x: np.ndarray, h: float) -> np.ndarray:
    """Partial-volume fraction of a voxel beyond a boundary at signed distance x (~1 voxel)."""
    return np.clip(0.5 + x / h, 0.0, 1.0)


def sample_head_params(rng: np.random.Generator) -> dict:
    """One patient's layer thicknesses (mm) and T1c intensities (template units, WM ~0.87)."""
    return {
        "csf_mm": float(rng.uniform(1.5, 3.0)),
        "skull_mm": float(rng.uniform(6.0, 8.0)),
        "table_fraction": float(rng.uniform(0.3, 0.38)),  # each cortical table
        "temporalis_mm": float(rng.uniform(4.0, 9.0)),
        "fat_mm": float(rng.uniform(3.5, 5.0)),
        "skin_mm": float(rng.uniform(1.2, 1.8)),
        "neck_semi_axes_mm": [float(rng.uniform(48, 60)), float(rng.uniform(50, 62))],
        "neck_centre_y_mm": float(rng.uniform(15, 30)),
        "csf": float(rng.uniform(0.18, 0.28)),
        "bone": float(rng.uniform(0.02, 0.06)),
        "marrow": float(rng.uniform(0.35, 0.6)),
        "muscle": float(rng.uniform(0.4, 0.55)),
        "fat": float(rng.uniform(1.0, 1.25)),
        "skin": float(rng.uniform(0.6, 0.8)),
    }


def build_head(rng: np.random.Generator, anat: Anatomy) -> Head:
    """Layer the head around `anat.brain` by distance (mm) from the brain's surface."""
    prm = sample_head_params(rng)
    h = anat.spacing
    pad = int(np.ceil(HEAD_PAD_MM / h))
    below = int(np.ceil(NECK_PAD_MM / h))
    grid = padded_grid(anat.grid, pad, below)
    brain = np.pad(anat.brain, pad)
    # distances from the brain matter only within HEAD_PAD_MM; the extra neck slices are far
    dist = distance_to(brain, h) - np.float32(h / 2)  # from the surface, <= 0 inside
    dist = np.pad(dist, ((below, 0), (0, 0), (0, 0)), constant_values=np.float32(1e3))
    brain = np.pad(brain, ((below, 0), (0, 0), (0, 0)))
    x, y, z = grid_coords(grid)
    neck = _neck_distance(prm, x, y, z)
    shell = (dist > -h) & (dist < HEAD_PAD_MM - h)  # where the head's layers can lie
    neck_zone = (neck < h + NECK_BLEND_MM / 4) & ~brain
    flat = np.flatnonzero(shell | neck_zone)
    k, j, i = np.unravel_index(flat, brain.shape)
    d = dist.ravel()[flat]
    px = x.ravel()[i] - HEAD_CENTRE_MM[0]
    py = y.ravel()[j] - HEAD_CENTRE_MM[1]
    pz = z.ravel()[k] - HEAD_CENTRE_MM[2]
    norm = np.sqrt(px * px + py * py + pz * pz) + np.float32(1e-3)
    u = (px / norm, py / norm, pz / norm)
    # temporal fossa: lateral, between the zygoma and the superior temporal line
    temporal = (np.clip((np.abs(u[0]) - 0.55) / 0.3, 0, 1)
                * np.clip((0.45 - u[2]) / 0.2, 0, 1) * np.clip((u[2] + 0.45) / 0.2, 0, 1))
    csf = prm["csf_mm"] * np.clip(1 + _shape_field(rng, u, 0.25), 0.6, 1.4)
    skull = (prm["skull_mm"] * np.clip(1 + _shape_field(rng, u, 0.12), 0.75, 1.3)
             * (1 - 0.4 * temporal))
    muscle = prm["temporalis_mm"] * temporal
    fat = (prm["fat_mm"] * np.clip(1 + _shape_field(rng, u, 0.25), 0.6, 1.4)
           * (1 + 0.25 * np.clip(u[1], 0, 1)) * (1 - 0.5 * temporal))  # thick occiput
    skin = prm["skin_mm"] * np.clip(1 + _shape_field(rng, u, 0.15), 0.7, 1.3)
    table = skull * prm["table_fraction"]
    bounds = [csf, csf + table, csf + skull - table, csf + skull]  # CSF | bone | marrow | bone
    outer = bounds[-1] + muscle + fat + skin
    # the skin: the head's and the neck's surfaces merged by a smooth minimum (a flared neck)
    n = neck.ravel()[flat]
    body = _smooth_min(d - outer, n, NECK_BLEND_MM)
    values = [prm["csf"], prm["bone"], prm["marrow"], prm["bone"]]
    vals = np.full(d.shape, values[0], np.float32)
    for b, before, after in zip(bounds[:-1], values[:-1], values[1:], strict=True):
        vals += np.float32(after - before) * _ramp(d - b, h)
    # outside the skull, by depth under the skin: muscle (temporalis, neck), fat, skin
    soft = np.float32(prm["muscle"]) + np.float32(prm["fat"] - prm["muscle"]) * _ramp(
        body + fat + skin, h)
    soft += np.float32(prm["skin"] - prm["fat"]) * _ramp(body + skin, h)
    vals += (soft - np.float32(prm["bone"])) * _ramp(d - bounds[-1], h)
    vals *= 1 - _ramp(body, h)
    vals[d <= 0] = 0.0  # the brain's own image fills it
    layers = np.zeros(brain.shape, np.float32)
    layers.ravel()[flat] = vals
    shown = layers > 0.01
    lowest = int(np.flatnonzero(brain.any(axis=(1, 2)))[0]) - int(NECK_SHOWN_MM / h)
    shown[:max(lowest, 0)] = False
    return Head(grid=grid, offset=(pad + below, pad, pad), layers=layers,
                corners_mm=_corners(grid, shown), params=_rounded(prm))


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: min(a, b) with the corner rounded over ~k mm."""
    w = np.maximum(np.float32(k) - np.abs(a - b), 0) / np.float32(k)
    return np.minimum(a, b) - w * w * np.float32(k / 4)


def _neck_distance(prm: dict, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) to an elliptic cylinder below NECK_TOP_Z_MM (<0 inside)."""
    ax, ay = prm["neck_semi_axes_mm"]
    r = np.sqrt((x / ax) ** 2 + ((y - prm["neck_centre_y_mm"]) / ay) ** 2)
    radial = (r - 1) * np.float32(min(ax, ay))
    return np.maximum(radial, z - np.float32(NECK_TOP_Z_MM)).astype(np.float32)


def _corners(grid: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """World corners of a mask's bounding box on an identity-direction grid."""
    zz, yy, xx = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = [xx[0], yy[0], zz[0]]
    hi = [xx[-1], yy[-1], zz[-1]]
    return np.asarray([
        grid.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
        for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])
    ])


def _rounded(prm: dict) -> dict:
    return {k: ([round(v, 3) for v in val] if isinstance(val, list) else round(val, 4))
            for k, val in prm.items()}

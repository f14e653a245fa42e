"""Surgery and radiotherapy: a resection cavity (optional residual tumour) and a plan-like dose.

Plan after the EORTC/ESTRO-ACROP glioblastoma guideline (Niyazi et al., Radiother Oncol 2016 and
2023): CTV = cavity + residual + 15-20 mm, clipped to the brain; PTV = CTV + 3-5 mm; 60 Gy in 30
fractions, or 40.05 Gy in 15 for older patients (Roa et al., JCO 2004); brainstem Dmax <= ~54 Gy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ricecli.simulate.anatomy import Anatomy, distance_to, smooth_noise

REGIMENS = {"60Gy/30fx": (60.0, 30), "40.05Gy/15fx": (40.05, 15)}
CAVITY_FLUID = 0.22  # T1c intensity of the fluid-filled cavity (template units; WM ~0.87)


@dataclass
class Resection:
    """The cavity as an implicit shape g (<= 1 inside) so that later visits can shrink it."""

    centre_mm: np.ndarray
    radius_mm: float
    shape_g: np.ndarray  # float32 (z, y, x); cavity = g <= 1
    cavity: np.ndarray  # bool
    residual: np.ndarray  # bool, enhancing residual tumour at the margin
    residual_centres_mm: list
    residual_cm3: float
    dist_cavity_mm: np.ndarray  # float32, distance to the cavity (0 inside)


@dataclass
class Plan:
    """Prescription, margins and the dose in Gy on the working grid."""

    regimen: str
    prescription_gy: float
    fractions: int
    ctv_margin_mm: float
    ptv_margin_mm: float
    hotspot: float  # fractional overdose of the hot spot (0.00-0.06)
    dose_gy: np.ndarray
    ptv: np.ndarray
    v95_cm3: float
    periventricular_v95: float  # fraction of periventricular white matter at >= 95 %


def _pick(rng: np.random.Generator, mask: np.ndarray, anat: Anatomy) -> np.ndarray:
    """World position (mm) of a random voxel of `mask`."""
    flat = np.flatnonzero(mask)
    k = int(flat[rng.integers(flat.size)])
    z, y, x = np.unravel_index(k, mask.shape)
    return np.asarray(anat.grid.TransformIndexToPhysicalPoint((int(x), int(y), int(z))))


def periventricular_wm(anat: Anatomy) -> np.ndarray:
    """White matter within 12 mm of the ventricles (RICE's predilection site)."""
    return (anat.wm > 0.5) & (anat.dist_ventricles_mm <= 12.0) & ~anat.ventricles


def place_resection(rng: np.random.Generator, anat: Anatomy, residual_prob: float) -> Resection:
    """A lobar resection cavity (9-20 mm radius, irregular) and, sometimes, residual nodules."""
    x, y, z = anat.coords()
    radius = float(rng.uniform(9.0, 20.0))
    candidates = (
        anat.brain
        & ((anat.wm + anat.gm) > 0.6)
        & (z > -12)
        & (np.abs(x) > 18)
        & (anat.dist_outside_mm > 0.45 * radius + 4)
        & (anat.dist_ventricles_mm > 0.5 * radius)
        & ~anat.brainstem
    )
    centre = _pick(rng, candidates, anat)
    semi = radius * rng.uniform(0.75, 1.25, size=3)
    rot = Rotation.from_rotvec(rng.normal(size=3) * 0.8).as_matrix().astype(np.float32)
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    local = [rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dz for i in range(3)]
    g = np.sqrt(sum((v / a) ** 2 for v, a in zip(local, semi, strict=False)))
    g = g + 0.10 * smooth_noise(rng, g.shape, 8.0 / anat.spacing)
    g = g.astype(np.float32)
    cavity = (g <= 1.0) & anat.brain & (anat.dist_outside_mm > 1.5)
    residual = np.zeros_like(cavity)
    centres = []
    dist_cav = distance_to(cavity, anat.spacing)
    if rng.random() < residual_prob:
        rim = (dist_cav > 0) & (dist_cav <= 2.0 * anat.spacing) & anat.brain
        for _ in range(int(rng.integers(1, 3))):
            c = _pick(rng, rim, anat)
            r = rng.uniform(3.0, 8.0)
            d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
            residual |= (d2 <= r * r) & anat.brain & ~cavity
            centres.append([round(float(v), 2) for v in c])
    vox_cm3 = anat.spacing**3 / 1000.0
    return Resection(
        centre_mm=centre,
        radius_mm=radius,
        shape_g=g,
        cavity=cavity,
        residual=residual,
        residual_centres_mm=centres,
        residual_cm3=float(residual.sum() * vox_cm3),
        dist_cavity_mm=dist_cav,
    )


def plan_dose(
    rng: np.random.Generator, anat: Anatomy, resection: Resection, regimen: str
) -> Plan:
    """A conformal plan: flat ~100 % in the PTV, ~10 %/5 mm at the edge, low-dose bath, sparing."""
    prescription, fractions = REGIMENS[regimen]
    h = anat.spacing
    target = resection.cavity | resection.residual
    ctv_margin = float(rng.uniform(15.0, 20.0))
    ptv_margin = float(rng.uniform(3.0, 5.0))
    dist_target = distance_to(target, h)
    ctv = (dist_target <= ctv_margin) & anat.brain
    ptv = distance_to(ctv, h) <= ptv_margin
    d_out = distance_to(ptv, h)
    d_in = distance_to(~ptv, h)
    # the field's tails can reach -8 sd on a small grid: keep the fall-off length positive
    falloff = np.maximum(25.0 * (1.0 + 0.12 * smooth_noise(rng, ptv.shape, 20.0 / h)), 1.0)
    outside = 0.95 * np.exp(-((d_out / falloff) ** 1.3))
    inside = (0.95 + 0.05 * np.clip(d_in / 4.0, 0, 1)) * (
        1.0 + 0.008 * smooth_noise(rng, ptv.shape, 6.0 / h)
    )
    frac = np.where(ptv, inside, outside).astype(np.float32)
    hotspot = float(rng.uniform(0.0, 0.06))
    deep = ptv & (d_in > 6.0)
    if deep.any():
        x, y, z = anat.coords()
        c = _pick(rng, deep, anat)
        blob = np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * 8.0**2))
        frac += (hotspot * blob * np.clip(d_in / 6.0, 0, 1)).astype(np.float32)
    # brainstem planning-risk volume (+3 mm): Dmax ~0.9 x prescription, rising 3 %/mm outside
    dist_bs = distance_to(anat.brainstem, h)
    cap = 0.90 + 0.03 * np.maximum(dist_bs - 3.0, 0.0)
    frac = np.minimum(frac, cap)
    head = distance_to(anat.brain, h) <= 12.0
    dose = (prescription * frac * head).astype(np.float32)
    vox_cm3 = h**3 / 1000.0
    high = dose >= 0.95 * prescription
    pv = periventricular_wm(anat)
    return Plan(
        regimen=regimen,
        prescription_gy=prescription,
        fractions=fractions,
        ctv_margin_mm=ctv_margin,
        ptv_margin_mm=ptv_margin,
        hotspot=hotspot,
        dose_gy=dose,
        ptv=ptv,
        v95_cm3=float((high & anat.brain).sum() * vox_cm3),
        periventricular_v95=float((high & pv).sum() / max(pv.sum(), 1)),
    )


def gaussian_dose(post_op: sitk.Image, peak_gy: float = 60.0, sigma_mm: float = 30.0,
                  spacing_mm: float = 2.5) -> sitk.Image:
    """A smooth dose in the post-op frame: a Gaussian field centred a little off the head's
    centroid (so that it is not symmetric), on a 2.5 mm axis-aligned grid over the scan."""
    arr = sitk.GetArrayViewFromImage(post_op)
    head = sitk.Cast(post_op > float(np.percentile(arr[arr > 0], 20)) if np.any(arr > 0)
                     else post_op > 0, sitk.sitkUInt8)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(head)
    centre = np.asarray(stats.GetCentroid(1)) + np.array([20.0, 10.0, 10.0])
    lo = np.asarray(post_op.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.asarray(post_op.TransformIndexToPhysicalPoint([n - 1 for n in post_op.GetSize()]))
    low, high = np.minimum(lo, hi) - 20, np.maximum(lo, hi) + 20
    size = [int(n) for n in np.ceil((high - low) / spacing_mm) + 1]
    return sitk.GaussianSource(sitk.sitkFloat32, size, [sigma_mm] * 3, centre.tolist(), peak_gy,
                               low.tolist(), [spacing_mm] * 3, normalized=False)


def centred_dose(image: sitk.Image, peak_gy: float = 60.0, sigma_mm: float = 30.0) -> sitk.Image:
    """A Gaussian dose at the image's centre, on a ~3 mm grid of its own frame (QA checks on
    real scans: scripts/qa_calibration.py, tests/test_qa.py)."""
    ref = sitk.BinShrink(image, [max(1, int(round(3 / s))) for s in image.GetSpacing()])
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    return sitk.GaussianSource(sitk.sitkFloat32, ref.GetSize(), [sigma_mm] * 3, centre, peak_gy,
                               ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection(), False)

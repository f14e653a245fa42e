"""The new contrast-enhancing lesion at the event scan: where it appears and what it looks like.

Recurrence: mostly at the resection margin (often where residual tumour was), nodular and
mass-like, sometimes marginal (field edge) or distant (Milano et al., IJROBP 2010; Chamberlain,
J Neurooncol 2011). RICE: inside the high-dose region with a periventricular white-matter
predilection, patchy "soap-bubble"/"Swiss-cheese" enhancement, sometimes multifocal (Kumar et
al., Radiology 2000; Mullins et al., AJNR 2005; Verma et al., Neuro Oncol 2013).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ricecli.simulate.anatomy import Anatomy, distance_to, smooth_noise
from ricecli.simulate.treatment import Plan, Resection, _pick, periventricular_wm


@dataclass
class Lesion:
    """The event lesion's maps on the working grid and its ground truth."""

    site: str
    centre_mm: np.ndarray  # anatomy frame
    solidity: float
    multifocal: bool
    radius_mm: float
    enhancement: np.ndarray  # additive T1c enhancement (template units)
    necrosis: np.ndarray  # 0..1 fraction replaced by non-enhancing necrotic/fluid signal
    edema: np.ndarray  # multiplicative T1 darkening factor (<= 1)
    mask: np.ndarray  # bool, the abnormal tissue (ground truth)
    foci_mm: list = field(default_factory=list)


def site_mask(site: str, anat: Anatomy, resection: Resection, plan: Plan,
              dist_cavity: np.ndarray) -> np.ndarray:
    """Where a lesion of this site may be centred."""
    rx = plan.prescription_gy
    # centres >= 10 mm deep: inside any template brain mask despite head scaling and warp
    tissue = ((anat.dist_outside_mm >= 10.0) & ((anat.wm + anat.gm) > 0.5) & ~anat.brainstem
              & ~resection.cavity)
    if site == "cavity_margin":
        m = tissue & (dist_cavity > 0) & (dist_cavity <= 6.0)
    elif site == "periventricular":
        m = periventricular_wm(anat) & (plan.dose_gy >= 0.9 * rx) & (dist_cavity > 6.0)
        if m.sum() < 20:  # cavity far from the ventricles: deep white matter in the field
            m = tissue & (anat.wm > 0.5) & (plan.dose_gy >= 0.9 * rx) & (dist_cavity > 6.0)
    elif site == "marginal":
        d = plan.dose_gy
        m = tissue & (d >= 0.5 * rx) & (d < 0.9 * rx) & (dist_cavity > 12.0)
    else:  # distant
        m = tissue & (plan.dose_gy < 0.4 * rx) & (anat.dist_outside_mm > 8.0)
    if m.sum() < 5:
        m = tissue & (dist_cavity > 0) & (dist_cavity <= 12.0)
    if m.sum() < 5:
        m = anat.brain & (anat.dist_outside_mm >= 10.0) & ~resection.cavity
    return m


def _box(anat: Anatomy, centre: np.ndarray, radius: float) -> tuple[slice, slice, slice]:
    """Working-grid slices (z, y, x) around a centre."""
    idx = np.asarray(anat.grid.TransformPhysicalPointToContinuousIndex(centre.tolist()))
    half = radius / anat.spacing
    size = anat.grid.GetSize()
    lo = np.maximum(np.floor(idx - half).astype(int), 0)
    hi = np.minimum(np.ceil(idx + half).astype(int) + 1, size)
    return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])


def render_focus(rng: np.random.Generator, anat: Anatomy, centre: np.ndarray, radius: float,
                 solidity: float, maps: dict) -> None:
    """Paint one focus: a solid (rim-enhancing when large) nodule blended with enhancing bubbles."""
    box = _box(anat, centre, radius + 20.0)
    x, y, z = anat.coords()
    x, y, z = x[..., box[2]], y[:, box[1], :], z[box[0]]
    r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    shape = r.shape
    lobes = 0.18 * smooth_noise(rng, shape, 4.0 / anat.spacing)
    enh = np.zeros(shape, np.float32)
    necro = np.zeros(shape, np.float32)
    region = np.zeros(shape, bool)
    level = rng.uniform(0.45, 0.7)
    solid_r = radius * (0.25 + 0.75 * solidity)
    if solidity > 0.15:
        g = r / solid_r + lobes
        region |= g <= 1.0
        if solid_r > 8.0:  # necrotic core, thick irregular enhancing wall
            wall = rng.uniform(0.35, 0.55)
            enh = np.maximum(enh, level * ((g <= 1.0) & (g > 1.0 - wall)))
            necro = np.maximum(necro, 0.8 * (g <= 1.0 - wall))
        else:
            enh = np.maximum(enh, level * (g <= 1.0))
    n_bubbles = int(round((1.0 - solidity) * 10))
    for _ in range(n_bubbles):
        u = rng.normal(size=3)
        c = centre + u / np.linalg.norm(u) * radius * rng.uniform(0.1, 1.0) ** (1 / 3)
        rb = rng.uniform(2.5, 5.0)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        shell = np.clip(1.0 - np.abs(d - rb) / 1.6, 0, 1)  # thin enhancing bubble wall
        enh = np.maximum(enh, level * rng.uniform(0.75, 1.0) * shell)
        necro = np.maximum(necro, 0.3 * (d < rb - 1.0))
        region |= d <= rb + 1.0
    if solidity < 0.6 and region.any():  # feathery, patchy enhancement between the bubbles
        patch = np.clip(0.5 * smooth_noise(rng, shape, 1.5 / anat.spacing) + 0.2, 0, 1)
        near = distance_to(region, anat.spacing) <= 2.0
        enh = np.maximum(enh, level * 0.6 * patch * near)
    for _ in range(int(rng.integers(0, 6)) if solidity < 0.6 else 0):  # spotty dots
        u = rng.normal(size=3)
        c = centre + u / np.linalg.norm(u) * radius * rng.uniform(0.3, 1.2)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        enh = np.maximum(enh, level * 0.8 * np.clip(1.0 - d / 2.0, 0, 1))
        region |= d <= 2.0
    brain = anat.brain[box]
    enh *= brain
    necro *= brain
    region &= brain
    dist = distance_to(region, anat.spacing) if region.any() else r
    edema = 1.0 - rng.uniform(0.08, 0.18) * np.exp(-dist / 8.0) * (anat.wm[box] > 0.3) * brain
    maps["enhancement"][box] = np.maximum(maps["enhancement"][box], enh)
    maps["necrosis"][box] = np.maximum(maps["necrosis"][box], necro)
    maps["edema"][box] = np.minimum(maps["edema"][box], edema.astype(np.float32))
    maps["mask"][box] |= region


def make_lesion(rng: np.random.Generator, anat: Anatomy, resection: Resection, plan: Plan,
                label: str, morphology: tuple[float, float], multifocal_prob: float,
                sites: dict) -> Lesion:
    """Sample the site, solidity and foci for this label, and paint them."""
    names = list(sites)
    site = names[int(rng.choice(len(names), p=[sites[s] for s in names]))]
    solidity = float(rng.beta(*morphology))
    multifocal = bool(rng.random() < multifocal_prob)
    radius = float(rng.uniform(6.0, 15.0))
    dist_cavity = resection.dist_cavity_mm
    regrow = (label == "recurrence" and site == "cavity_margin"
              and bool(resection.residual_centres_mm) and rng.random() < 0.7)
    if regrow:  # regrowth from the residual tumour, if it is deep enough (see site_mask)
        c = np.asarray(resection.residual_centres_mm[0])
        i, j, k = anat.grid.TransformPhysicalPointToIndex(c.tolist())
        regrow = anat.dist_outside_mm[k, j, i] >= 10.0
    if regrow:
        centre = c
    else:
        centre = _pick(rng, site_mask(site, anat, resection, plan, dist_cavity), anat)
    shape = anat.t1.shape
    maps = {
        "enhancement": np.zeros(shape, np.float32),
        "necrosis": np.zeros(shape, np.float32),
        "edema": np.ones(shape, np.float32),
        "mask": np.zeros(shape, bool),
    }
    render_focus(rng, anat, centre, radius, solidity, maps)
    foci = [[round(float(v), 2) for v in centre]]
    if multifocal:
        second = ("periventricular" if label == "RICE"
                  else str(rng.choice(["cavity_margin", "distant"])))
        c2 = _pick(rng, site_mask(second, anat, resection, plan, dist_cavity), anat)
        render_focus(rng, anat, c2, radius * rng.uniform(0.4, 0.7), solidity, maps)
        foci.append([round(float(v), 2) for v in c2])
    return Lesion(
        site=site,
        centre_mm=centre,
        solidity=solidity,
        multifocal=multifocal,
        radius_mm=radius,
        enhancement=maps["enhancement"],
        necrosis=maps["necrosis"],
        edema=maps["edema"],
        mask=maps["mask"],
        foci_mm=foci,
    )

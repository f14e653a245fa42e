"""A PNG montage of simulated cases (post-op, event, dose over post-op; three planes through the
lesion), drawn with PIL. Regenerate the docs figure with:

    python -m ricecli.simulate.montage docs/simulated-case.png --seed 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

from ricecli.simulate.anatomy import HEAD_CENTRE_MM
from ricecli.simulate.case import SimConfig, SimulatedCase, simulate_case
from ricecli.simulate.scanner import matrix_transform

PANEL_MM = 220  # field of view of each panel (1 mm per pixel): a whole head


def _display_grid(centre: list) -> sitk.Image:
    grid = sitk.Image([PANEL_MM] * 3, sitk.sitkFloat32)
    grid.SetOrigin([c - PANEL_MM / 2 for c in centre])
    return grid


def _to_display(img: sitk.Image, scan_truth: dict, grid: sitk.Image) -> np.ndarray:
    """Resample a native scan into the anatomy frame (display grid) with its true pose."""
    anatomy_to_scanner = matrix_transform(scan_truth["scanner_to_anatomy"]).GetInverse()
    out = sitk.Resample(img, grid, anatomy_to_scanner, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _planes(vol: np.ndarray, at: tuple) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through voxel `at` (x, y, z), displayed radiologically
    (L on right, anterior/superior up)."""
    x, y, z = at
    axial = vol[z]  # rows: anterior (low y) at the top
    coronal = vol[::-1, y, :]
    sagittal = vol[::-1, :, x]
    return [axial, coronal, sagittal]


def _white(vol: np.ndarray) -> float:
    """Display maximum: 1.8 x the median brain signal (so enhancement stands out over WM)."""
    bright = vol[vol > 0.3 * np.percentile(vol, 99)]
    return 1.8 * float(np.median(bright)) if bright.size else 1.0


def _grey(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    g = np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.stack([g, g, g], -1)


def _hot(dose_frac: np.ndarray) -> np.ndarray:
    """A simple jet-like colour map for the dose (0..1 of 60 Gy)."""
    d = np.clip(dose_frac, 0, 1.1)
    r = np.clip(1.5 * d - 0.2, 0, 1)
    g = np.clip(1.5 - np.abs(2.2 * d - 1.4), 0, 1)
    b = np.clip(1.2 - 2.0 * d, 0, 1)
    return np.stack([r, g, b], -1)


def case_rows(case: SimulatedCase) -> list[list[np.ndarray]]:
    """Three rows (post-op, event with lesion outline, dose over post-op) x three planes, RGB."""
    t = case.truth
    grid = _display_grid(HEAD_CENTRE_MM.tolist())  # the head in view, planes through the lesion
    at = grid.TransformPhysicalPointToIndex(t["lesion"]["centre_anatomy_mm"])
    post = _to_display(case.post_op, t["post_op_scan"], grid)
    event = _to_display(case.event, t["event_scan"], grid)
    dose = _to_display(case.dose_gy, t["post_op_scan"], grid)
    mask = _to_display(case.lesion_mask, t["event_scan"], grid) > 0.5
    rows = []
    for vol in (post, event):
        rows.append([_grey(p, 0, _white(vol)) for p in _planes(vol, at)])
    edge = mask ^ np.roll(mask, 1, 1) | mask ^ np.roll(mask, 1, 2) | mask ^ np.roll(mask, 1, 0)
    for img, e in zip(rows[1], _planes(edge, at), strict=False):
        img[e] = 0.5 * img[e] + 0.5 * np.array([0.1, 1.0, 0.2])
    hi = _white(post)
    overlay = []
    for p, d in zip(_planes(post, at), _planes(dose, at), strict=False):
        a = np.clip(d / 60.0, 0, 1)[..., None] * 0.55 * (d[..., None] > 1.0)
        overlay.append(_grey(p, 0, hi) * (1 - a) + _hot(d / 60.0) * a)
    rows.append(overlay)
    return rows


def render(cases: list[SimulatedCase], path: Path) -> Path:
    """Write the montage: per case a labelled block of 3 x 3 panels."""
    pad, label_h = 4, 18
    block_w = 3 * PANEL_MM + 4 * pad + 70
    block_h = label_h + 3 * (PANEL_MM + pad) + pad
    canvas = Image.new("RGB", (block_w * len(cases), block_h), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, case in enumerate(cases):
        x0 = k * block_w
        t = case.truth
        head = "skull on" if t.get("skull_on") else "skull-stripped"
        title = (f"{case.case_id}: {case.label} ({t['lesion']['site']}, solidity "
                 f"{t['lesion']['solidity']:.2f}, {t['plan']['regimen']}, "
                 f"p_rec {t['p_recurrence']:.2f}; {head})")
        draw.text((x0 + pad, 3), title, fill=(255, 255, 255))
        names = ("post-op", "event", "dose")
        for r, (name, row) in enumerate(zip(names, case_rows(case), strict=True)):
            y = label_h + r * (PANEL_MM + pad)
            draw.text((x0 + pad, y + PANEL_MM // 2), name, fill=(255, 255, 0))
            for c, panel in enumerate(row):
                tile = Image.fromarray((np.clip(panel, 0, 1) * 255).astype(np.uint8))
                canvas.paste(tile, (x0 + 70 + c * (PANEL_MM + pad), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _typical(case: SimulatedCase) -> bool:
    """A textbook example: solid recurrence at the margin, bubbly periventricular RICE."""
    les = case.truth["lesion"]
    if case.label == "recurrence":
        return les["site"] == "cavity_margin" and les["solidity"] > 0.6
    return les["site"] == "periventricular" and les["solidity"] < 0.4


def one_of_each(seed: int, config: SimConfig = SimConfig(), limit: int = 30,
                typical: bool = True) -> list[SimulatedCase]:
    """The first (typical, if asked and found) RICE and recurrence case of a seed."""
    found: dict[str, SimulatedCase] = {}
    fallback: dict[str, SimulatedCase] = {}
    for i in range(limit):
        case = simulate_case(i, seed, config)
        fallback.setdefault(case.label, case)
        if not typical or _typical(case):
            found.setdefault(case.label, case)
        if len(found) == 2:
            break
    found = {**fallback, **found}
    return [found[k] for k in ("RICE", "recurrence") if k in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    print(render(one_of_each(args.seed), args.out))


if __name__ == "__main__":
    main()

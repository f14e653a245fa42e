"""overview.png: three planes through the strongest region, heatmap over the event T1c.

Planes are resampled from the scan's own (possibly oblique) grid onto axis-aligned LPS planes
through the peak, shown in the radiological convention: axial and coronal with the patient's
right on the image's left, anterior up (axial), superior up (coronal, sagittal), sagittal with
anterior on the left. The convention is written on the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

PANEL_PX = 300
NAME_PX = 20
CONVENTION = "radiological: patient Right on image left (LPS)"
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _world_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (min, max) of the image's voxel centres."""
    size = image.GetSize()
    corners = [image.TransformContinuousIndexToPhysicalPoint(
        [float(i * (n - 1)) for i, n in zip(c, size, strict=False)])
        for c in np.ndindex(2, 2, 2)]
    pts = np.asarray(corners)
    return pts.min(axis=0), pts.max(axis=0)


def _plane(image: sitk.Image, axis: int, peak_mm: Sequence[float], lo: np.ndarray,
           hi: np.ndarray, step: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The axis-aligned LPS plane (normal = world axis `axis`) through the peak, as a 2-D
    array in display orientation, and the peak's (row, col) in it."""
    size = [max(1, int(round((h - low) / step)) + 1) for low, h in zip(lo, hi, strict=True)]
    origin = list(map(float, lo))
    size[axis], origin[axis] = 1, float(peak_mm[axis])
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing([step] * 3)
    ref.SetOrigin(origin)
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out)  # (z, y, x) with one singleton axis
    x, y, z = ((float(p) - low) / step for p, low in zip(peak_mm, lo, strict=True))
    top_z = size[2] - 1 - z  # rows of coronal and sagittal planes run from superior down
    if axis == 2:  # axial: rows y (anterior up), cols x (patient right on the left)
        return arr[0], (y, x)
    if axis == 1:  # coronal: rows z flipped (superior up), cols x
        return arr[:, 0, :][::-1], (top_z, x)
    return arr[:, :, 0][::-1], (top_z, y)  # sagittal: rows z flipped, cols y (anterior left)


def _grey(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    g = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((g * 255)[..., None], 3, axis=2)


def _heat_rgb(v: np.ndarray) -> np.ndarray:
    """Diverging colours for v in [-1, 1]: blue-cyan for negative, red-yellow for positive."""
    a = np.clip(np.abs(v), 0, 1)
    pos = np.stack([np.ones_like(a), a, np.zeros_like(a)], -1)
    neg = np.stack([np.zeros_like(a), a, np.ones_like(a)], -1)
    return np.where((v >= 0)[..., None], pos, neg) * 255


def _overlay(base: np.ndarray, heat: np.ndarray, vmax: float) -> np.ndarray:
    v = heat / vmax
    alpha = (np.clip(np.abs(v), 0, 1) * 0.75)[..., None]
    alpha[np.abs(v) < 0.05] = 0
    return (base * (1 - alpha) + _heat_rgb(v) * alpha).astype(np.uint8)


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _panel(rgb: np.ndarray, labels: Sequence[str], name: str, peak_rc: tuple[float, float],
           font: Font) -> Image.Image:
    """Scale a plane into a PANEL_PX square under a name strip; orientation letters (top,
    bottom, left, right) at the edges; a green ring at the peak."""
    h, w = rgb.shape[:2]
    scale = PANEL_PX / max(h, w)
    img = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                      Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (PANEL_PX, PANEL_PX + NAME_PX), "black")
    x0, y0 = (PANEL_PX - img.width) // 2, NAME_PX + (PANEL_PX - img.height) // 2
    canvas.paste(img, (x0, y0))
    d = ImageDraw.Draw(canvas)
    top, bottom, left, right = labels
    c, mid = PANEL_PX // 2, NAME_PX + PANEL_PX // 2
    d.text((c, NAME_PX + 4), top, fill="white", font=font, anchor="mt")
    d.text((c, NAME_PX + PANEL_PX - 4), bottom, fill="white", font=font, anchor="mb")
    d.text((4, mid), left, fill="white", font=font, anchor="lm")
    d.text((PANEL_PX - 4, mid), right, fill="white", font=font, anchor="rm")
    d.text((c, NAME_PX // 2), name, fill="yellow", font=font, anchor="mm")
    py, px = y0 + (peak_rc[0] + 0.5) * scale, x0 + (peak_rc[1] + 0.5) * scale
    d.ellipse((px - 9, py - 9, px + 9, py + 9), outline=(0, 255, 0), width=2)
    return canvas


def _colour_bar(vmax: float, height: int, font: Font) -> Image.Image:
    bar_w, pad = 18, 60
    img = Image.new("RGB", (bar_w + pad, height), "black")
    span = height - 40
    v = np.linspace(1, -1, span)[:, None].repeat(bar_w, 1)
    img.paste(Image.fromarray(_heat_rgb(v).astype(np.uint8)), (4, 20))
    d = ImageDraw.Draw(img)
    for frac, val in ((0, vmax), (0.5, 0.0), (1, -vmax)):
        d.text((bar_w + 8, 20 + frac * (span - 1)), f"{val:+.3f}", fill="white", font=font,
               anchor="lm")
    return img


def write_overview(event_image: sitk.Image, heat: sitk.Image, path: str | Path,
                   peak_mm: Sequence[float], title: str) -> Path:
    """Render three planes through `peak_mm` (LPS) with the heatmap, colour bar and labels."""
    lo, hi = _world_bounds(event_image)
    step = max(min(event_image.GetSpacing()), 0.5)
    event = sitk.Cast(event_image, sitk.sitkFloat32)
    heat_arr = sitk.GetArrayViewFromImage(heat)
    vmax = float(np.abs(heat_arr).max()) or 1e-6
    vals = sitk.GetArrayViewFromImage(event)
    nz = vals[vals != 0]
    wlo = float(np.percentile(vals, 1))  # the background, usually 0
    whi = float(np.percentile(nz if nz.size else vals, 99.5))
    whi = whi if whi > wlo else wlo + 1.0
    font, small = _font(16), _font(13)
    views = (("axial", 2, ("A", "P", "R", "L")), ("coronal", 1, ("S", "I", "R", "L")),
             ("sagittal", 0, ("S", "I", "A", "P")))
    panels = []
    for name, axis, labels in views:
        grey, peak_rc = _plane(event, axis, peak_mm, lo, hi, step)
        hmap, _ = _plane(heat, axis, peak_mm, lo, hi, step)
        mm = "LPS {} = {:.1f} mm".format("xyz"[axis], peak_mm[axis])
        panels.append(_panel(_overlay(_grey(grey, wlo, whi), hmap, vmax), labels,
                             f"{name}, {mm}", peak_rc, small))
    bar = _colour_bar(vmax, PANEL_PX + NAME_PX, small)
    head, foot = 30, 22
    sheet = Image.new("RGB", (3 * PANEL_PX + bar.width, PANEL_PX + NAME_PX + head + foot),
                      "black")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * PANEL_PX, head))
    sheet.paste(bar, (3 * PANEL_PX, head))
    d = ImageDraw.Draw(sheet)
    d.text((8, head // 2), title, fill="white", font=font, anchor="lm")
    d.text((8, sheet.height - foot // 2), f"{CONVENTION}; green ring: peak at LPS "
           f"({peak_mm[0]:.1f}, {peak_mm[1]:.1f}, {peak_mm[2]:.1f}) mm; colour = drop in "
           "p(target) when occluded", fill="white", font=small, anchor="lm")
    path = Path(path)
    sheet.save(path)
    return path

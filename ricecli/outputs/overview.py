"""overview.png: rows of three planes over the event T1c, through the enhancing lesion and
through the map's strongest region, each row named; the map on a fixed delta-p scale.

Planes are resampled from the scan's own (possibly oblique) grid onto axis-aligned LPS planes
through each row's point, shown in the radiological convention: axial and coronal with the
patient's right on the image's left, anterior up (axial), superior up (coronal, sagittal),
sagittal with anterior on the left. The convention, the scale and the sign of the colours are
written on the image. A map too weak to matter is not painted: the sheet says so instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

PANEL_PX = 300
NAME_PX = 20  # strip above each panel: plane name and position
ROW_PX = 22  # strip above each row: what the row cuts through
HEAD_PX = 30  # the title
NOTE_PX = 24  # under the title: the scale, or why nothing is painted
LINE_PX = 18  # each legend line at the bottom
DP_SCALE = 0.20  # fixed colour scale: |delta p| >= DP_SCALE is full colour, on every figure
CONVENTION = "radiological: patient Right on image left (LPS)"
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@dataclass(frozen=True)
class Row:
    """One row of three planes: what it cuts through and the LPS point (mm) it is centred on."""

    name: str
    point_mm: tuple[float, float, float]


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


def _overlay(base: np.ndarray, heat: np.ndarray | None, scale: float) -> np.ndarray:
    """The heat over the grey scan on a fixed scale (|delta p| >= scale: full colour)."""
    if heat is None:
        return base.astype(np.uint8)
    v = heat / scale
    alpha = (np.clip(np.abs(v), 0, 1) * 0.75)[..., None]
    alpha[np.abs(v) < 0.05] = 0
    return (base * (1 - alpha) + _heat_rgb(v) * alpha).astype(np.uint8)


def _outline(rgb: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """Draw the lesion's edge (inside voxels next to an outside one) in green."""
    if inside is None or not inside.any():
        return rgb
    edge = inside & ~ndimage.binary_erosion(inside)
    out = rgb.copy()
    out[edge] = (0, 255, 0)
    return out


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _panel(rgb: np.ndarray, labels: Sequence[str], name: str, point_rc: tuple[float, float],
           font: Font) -> Image.Image:
    """Scale a plane into a PANEL_PX square under a name strip; orientation letters (top,
    bottom, left, right) at the edges; a white ring at the row's point."""
    h, w = rgb.shape[:2]
    scale = PANEL_PX / max(h, w)
    img = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                      Image.Resampling.NEAREST)
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
    py, px = y0 + (point_rc[0] + 0.5) * scale, x0 + (point_rc[1] + 0.5) * scale
    d.ellipse((px - 12, py - 12, px + 12, py + 12), outline="white", width=1)
    return canvas


def _colour_bar(scale: float, height: int, font: Font) -> Image.Image:
    """The fixed delta-p scale: +scale (top) to -scale (bottom), clipped beyond."""
    bar_w, pad = 18, 80
    img = Image.new("RGB", (bar_w + pad, height), "black")
    span = height - 40
    v = np.linspace(1, -1, span)[:, None].repeat(bar_w, 1)
    img.paste(Image.fromarray(_heat_rgb(v).astype(np.uint8)), (4, 20))
    d = ImageDraw.Draw(img)
    d.text((4, 10), "delta p", fill="white", font=font, anchor="lm")
    for frac, val in ((0, scale), (0.5, 0.0), (1, -scale)):
        sign = "+" if val > 0 else ("-" if val < 0 else " ")
        d.text((bar_w + 8, 20 + frac * (span - 1)), f"{sign}{abs(val):.2f}", fill="white",
               font=font, anchor="lm")
    return img


def _row(event: sitk.Image, heat: sitk.Image | None, lesion: sitk.Image | None, row: Row,
         bounds: tuple[np.ndarray, np.ndarray, float], window: tuple[float, float],
         scale: float, font: Font) -> Image.Image:
    """One named row: axial, coronal and sagittal planes through `row.point_mm`."""
    lo, hi, step = bounds
    views = (("axial", 2, ("A", "P", "R", "L")), ("coronal", 1, ("S", "I", "R", "L")),
             ("sagittal", 0, ("S", "I", "A", "P")))
    strip = Image.new("RGB", (3 * PANEL_PX, ROW_PX + NAME_PX + PANEL_PX), "black")
    ImageDraw.Draw(strip).text((8, ROW_PX // 2), row.name, fill=(0, 255, 0), font=font,
                               anchor="lm")
    for i, (name, axis, labels) in enumerate(views):
        grey, rc = _plane(event, axis, row.point_mm, lo, hi, step)
        hmap = None if heat is None else _plane(heat, axis, row.point_mm, lo, hi, step)[0]
        inside = None if lesion is None else \
            _plane(lesion, axis, row.point_mm, lo, hi, step)[0] > 0.5
        rgb = _outline(_overlay(_grey(grey, *window), hmap, scale), inside)
        mm = "LPS {} = {:.1f} mm".format("xyz"[axis], row.point_mm[axis])
        strip.paste(_panel(rgb, labels, f"{name}, {mm}", rc, font), (i * PANEL_PX, ROW_PX))
    return strip


def write_overview(event_image: sitk.Image, heat: sitk.Image, path: str | Path,
                   rows: Sequence[Row], title: str, legend: Sequence[str], *,
                   lesion: sitk.Image | None = None, scale: float = DP_SCALE,
                   quiet: str | None = None) -> Path:
    """Render `rows` (three planes each) with the heat on a fixed +-`scale` delta-p scale, the
    lesion outlined in green, the title, and `legend` lines; `quiet`: a sentence shown instead
    of painting the heat (a map too weak to change the answer)."""
    lo, hi = _world_bounds(event_image)
    bounds = (lo, hi, max(min(event_image.GetSpacing()), 0.5))
    event = sitk.Cast(event_image, sitk.sitkFloat32)
    vals = sitk.GetArrayViewFromImage(event)
    nz = vals[vals != 0]
    wlo = float(np.percentile(vals, 1))  # the background, usually 0
    whi = float(np.percentile(nz if nz.size else vals, 99.5))
    window = (wlo, whi if whi > wlo else wlo + 1.0)
    font, small = _font(16), _font(13)
    shown = None if quiet else heat
    strips = [_row(event, shown, lesion, row, bounds, window, scale, small) for row in rows]
    bar = _colour_bar(scale, PANEL_PX + NAME_PX, small)
    top = HEAD_PX + NOTE_PX
    height = top + sum(s.height for s in strips) + LINE_PX * len(legend) + 6
    sheet = Image.new("RGB", (3 * PANEL_PX + bar.width, height), "black")
    y = top
    for strip in strips:
        sheet.paste(strip, (0, y))
        y += strip.height
    if quiet is None:
        sheet.paste(bar, (3 * PANEL_PX, top + ROW_PX))
    d = ImageDraw.Draw(sheet)
    d.text((8, HEAD_PX // 2), title, fill="white", font=font, anchor="lm")
    note = quiet or (f"colour: fixed scale, delta p from -{scale:.2f} to +{scale:.2f} "
                     "(stronger values clipped)")
    d.text((8, HEAD_PX + NOTE_PX // 2), note, fill="yellow" if quiet else "white",
           font=font if quiet else small, anchor="lm")
    for i, line in enumerate(legend):
        d.text((8, y + 3 + LINE_PX * i + LINE_PX // 2), line, fill="white", font=small,
               anchor="lm")
    path = Path(path)
    sheet.save(path)
    return path

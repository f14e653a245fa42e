"""overview.png: a heat blob at the patient's left-anterior-superior shows up where the
radiological convention puts it, on an event scan stored oblique."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from ricecli.outputs.overview import NAME_PX, PANEL_PX, write_overview

HEAD = 30  # title strip above the panels


def _oblique_head() -> sitk.Image:
    """A grey ellipsoid 'head' on an oblique 2 mm grid centred near the world origin."""
    img = sitk.Image([80, 90, 70], sitk.sitkFloat32)
    img.SetSpacing([2.0, 2.0, 2.0])
    rot = sitk.Euler3DTransform((0, 0, 0), 0.2, 0.1, -0.3)
    direction = np.reshape(rot.GetMatrix(), (3, 3))
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin((-direction @ (np.array([79, 89, 69]) * 2.0 / 2)).tolist())
    idx = np.indices((70, 90, 80)).reshape(3, -1)[::-1].T  # (x, y, z)
    world = idx * 2.0 @ direction.T + img.GetOrigin()
    inside = ((world / [65.0, 80.0, 60.0]) ** 2).sum(1) < 1
    arr = np.where(inside, 100.0, 0.0).reshape(70, 90, 80).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out, world.reshape(70, 90, 80, 3)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    head, world = _oblique_head()
    blob = np.array([30.0, -35.0, 25.0])  # LPS: patient Left, Anterior, Superior
    d2 = ((world - blob) ** 2).sum(-1)
    heat = sitk.GetImageFromArray(np.exp(-d2 / (2 * 6.0**2)).astype(np.float32) * 0.2)
    heat.CopyInformation(head)
    path = tmp_path_factory.mktemp("ov") / "overview.png"
    write_overview(head, heat, path, blob, title="p(recurrence) = 0.900")
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _hot_centre(png: np.ndarray, panel: int) -> tuple[float, float]:
    """Mean (row, col) of strongly red/yellow pixels in one panel, relative to its centre."""
    top = HEAD + NAME_PX
    p = png[top:top + PANEL_PX, panel * PANEL_PX:(panel + 1) * PANEL_PX]
    hot = (p[..., 0] > 150) & (p[..., 0] > p[..., 2] + 80) & (p[..., 0] > p[..., 1] + 20)
    assert hot.sum() > 20, f"no heat visible in panel {panel}"
    rows, cols = np.nonzero(hot)
    return rows.mean() - PANEL_PX / 2, cols.mean() - PANEL_PX / 2


def test_layout(rendered):
    assert rendered.shape[0] == HEAD + NAME_PX + PANEL_PX + 22
    assert rendered.shape[1] > 3 * PANEL_PX  # three planes and a colour bar


def test_axial_radiological(rendered):
    row, col = _hot_centre(rendered, 0)
    assert col > 20  # patient left on the image's right
    assert row < -20  # anterior up


def test_coronal_radiological(rendered):
    row, col = _hot_centre(rendered, 1)
    assert col > 20  # patient left on the image's right
    assert row < -20  # superior up


def test_sagittal(rendered):
    row, col = _hot_centre(rendered, 2)
    assert col < -20  # anterior on the image's left
    assert row < -20  # superior up

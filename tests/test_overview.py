"""overview.png: a heat blob at the patient's left-anterior-superior shows up where the
radiological convention puts it, on an event scan stored oblique; rows named, the lesion
outlined, the colour scale fixed (a weak map stays faint), a quiet map not painted."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from ricecli.outputs.overview import (
    HEAD_PX,
    LINE_PX,
    NAME_PX,
    NOTE_PX,
    PANEL_PX,
    ROW_PX,
    Row,
    write_overview,
)

ROW_H = ROW_PX + NAME_PX + PANEL_PX
BLOB = (30.0, -35.0, 25.0)  # LPS: patient Left, Anterior, Superior
LEGEND = ["line one", "line two"]


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


def _render(folder, peak: float = 0.2, quiet: str | None = None, lesion: bool = True
            ) -> np.ndarray:
    """Two rows (lesion at a right-posterior ball, strongest region at BLOB) as RGB ints."""
    head, world = _oblique_head()
    d2 = ((world - np.array(BLOB)) ** 2).sum(-1)
    heat = sitk.GetImageFromArray(np.exp(-d2 / (2 * 6.0**2)).astype(np.float32) * peak)
    heat.CopyInformation(head)
    ball = (-25.0, 20.0, -10.0)
    inside = sitk.GetImageFromArray(
        (((world - np.array(ball)) ** 2).sum(-1) < 10.0**2).astype(np.float32))
    inside.CopyInformation(head)
    rows = [Row("row 1: through the lesion", ball), Row("row 2: strongest region", BLOB)]
    path = folder / "overview.png"
    write_overview(head, heat, path, rows, "p(recurrence) = 0.900 (calibrated)", LEGEND,
                   lesion=inside if lesion else None, quiet=quiet)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return _render(tmp_path_factory.mktemp("ov"))


def _panel(png: np.ndarray, panel: int, row: int = 1) -> np.ndarray:
    top = HEAD_PX + NOTE_PX + row * ROW_H + ROW_PX + NAME_PX
    return png[top:top + PANEL_PX, panel * PANEL_PX:(panel + 1) * PANEL_PX]


def _hot(p: np.ndarray) -> np.ndarray:
    return (p[..., 0] > 150) & (p[..., 0] > p[..., 2] + 80) & (p[..., 0] > p[..., 1] + 20)


def _hot_centre(png: np.ndarray, panel: int) -> tuple[float, float]:
    """Mean (row, col) of strongly red/yellow pixels in one panel of the strongest-region row,
    relative to its centre."""
    hot = _hot(_panel(png, panel))
    assert hot.sum() > 20, f"no heat visible in panel {panel}"
    rows, cols = np.nonzero(hot)
    return rows.mean() - PANEL_PX / 2, cols.mean() - PANEL_PX / 2


def test_layout(rendered):
    assert rendered.shape[0] == HEAD_PX + NOTE_PX + 2 * ROW_H + LINE_PX * len(LEGEND) + 6
    assert rendered.shape[1] > 3 * PANEL_PX  # three planes and a colour bar


def test_lesion_row_outlines_the_lesion_in_green(rendered):
    for panel in range(3):
        p = _panel(rendered, panel, row=0)
        green = (p[..., 1] > 200) & (p[..., 0] < 60) & (p[..., 2] < 60)
        assert green.sum() > 30, f"no lesion outline in panel {panel}"
        rows, cols = np.nonzero(green)  # the row is cut through the lesion: centred on it
        assert abs(rows.mean() - PANEL_PX / 2) < 40 and abs(cols.mean() - PANEL_PX / 2) < 40


def test_fixed_scale_keeps_a_weak_map_faint_and_quiet_paints_nothing(tmp_path, rendered):
    weak = _render(tmp_path, peak=0.003)  # stretched to full colour before issue 21
    assert not _hot(_panel(weak, 0)).any()
    assert _hot(_panel(rendered, 0)).sum() > 20
    quiet = _render(tmp_path, quiet="no region changes the answer", lesion=False)
    body = quiet[HEAD_PX + NOTE_PX:]
    assert not _hot(body[:, :3 * PANEL_PX]).any()
    assert not (body[..., 2] > body[..., 0] + 80).any()  # no blue either, no colour bar


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

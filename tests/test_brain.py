"""Brain extraction: deepbet's networks under ONNX Runtime, torch-free."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from head_fixtures import TCGA, make_image, moved, rigid_motion, synthetic_head

from ricecli.errors import InputError, ModelError
from ricecli.geometry import brain


def _dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


def _remap(mask: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    moved = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0)
    return sitk.Cast(moved >= 0.5, sitk.sitkUInt8)


# --- geometry and deepbet's resampling


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS
    (0, 0, 1, 1, 0, 0, 0, -1, 0),  # sagittal-like permutation with a flip
])
def test_ras_order_round_trips_and_runs_right_anterior_superior(direction):
    image = make_image(np.zeros((3, 4, 5)), direction=[float(d) for d in direction])
    source, flip = brain._ras_axes(image)
    voxels = np.arange(60, dtype=np.float32).reshape(5, 4, 3)  # i, j, k
    ras = brain._to_ras(voxels, source, flip)
    assert np.array_equal(brain._from_ras(ras, source, flip), voxels)
    d = np.diag([-1.0, -1.0, 1.0]) @ np.array(direction, float).reshape(3, 3)  # RAS cosines
    for world in range(3):
        step = d[:, source[world]] * (-1 if flip[world] else 1)
        assert step[world] == 1.0  # RAS axis `world` increases along +world


def test_nearest_exact_matches_torch():
    torch = pytest.importorskip("torch")
    volume = np.random.default_rng(1).normal(size=(37, 26, 61)).astype(np.float32)
    for shape in [(128, 128, 128), (16, 9, 200), (37, 26, 61)]:
        want = torch.nn.functional.interpolate(torch.from_numpy(volume)[None, None], shape,
                                               mode="nearest-exact")[0, 0].numpy()
        assert np.array_equal(brain._nearest_exact(volume, shape), want), shape


def test_missing_network_is_a_model_error(monkeypatch, tmp_path):
    monkeypatch.setattr(brain, "BRAIN_DIR", tmp_path)
    brain.clear_sessions()
    try:
        with pytest.raises(ModelError, match="brain-extraction network is missing"):
            brain.extract_brain(synthetic_head(True, True))
    finally:
        brain.clear_sessions()


def test_blank_scan_has_no_brain():
    with pytest.raises(InputError, match="found no brain"):
        brain.extract_brain(make_image(np.zeros((20, 24, 24))))


def test_extract_brain_refuses_a_vector_image():
    with pytest.raises(InputError, match="3D scalar image"):
        brain.extract_brain(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3))


# --- the real skull-on scan


@pytest.fixture(scope="module")
def tcga(shared_data):
    scan = sitk.ReadImage(str(shared_data / TCGA / "TCGA-FG-6692_t1c.nii.gz"))
    ref = sitk.ReadImage(str(shared_data / TCGA / "TCGA-FG-6692_t1c_brainmask.nii.gz"))
    return scan, ref, brain.extract_brain(scan)


@pytest.mark.slow
def test_extract_brain_matches_reference_mask(tcga):
    scan, ref, mask = tcga
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == scan.GetSize() and mask.GetSpacing() == scan.GetSpacing()
    assert mask.GetOrigin() == scan.GetOrigin() and mask.GetDirection() == scan.GetDirection()
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) == {0, 1}
    assert _dice(mask, ref) >= 0.95  # measured 0.967 (deepbet's own grid of 256: 0.971)


@pytest.mark.slow
def test_extract_brain_is_deterministic(tcga):
    scan, _, mask = tcga
    again = brain.extract_brain(scan)
    assert np.array_equal(sitk.GetArrayViewFromImage(again), sitk.GetArrayViewFromImage(mask))


@pytest.mark.slow
def test_mask_follows_the_anatomy_in_another_pose(tcga):
    scan, ref, _ = tcga
    motion = rigid_motion(scan, 10.0, (10.0, -10.0, 5.0))  # 10 deg, 15 mm
    posed_mask = brain.extract_brain(moved(scan, motion))
    back = _remap(posed_mask, scan, motion.GetInverse())
    assert _dice(back, ref) >= 0.93  # measured 0.96-0.97 over three poses

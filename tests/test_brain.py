"""Brain extraction (deepbet's networks under ONNX Runtime) and the skull-stripped detector."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.errors import InputError, ModelError
from ricecli.geometry import brain

TCGA = "mri/TCGA-FG-6692"


def _dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


def _image(voxels_zyx: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(voxels_zyx.astype(np.float32))
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _rigid(image: sitk.Image, angle_deg: float, shift_mm: tuple) -> sitk.Transform:
    """A rotation about an oblique axis through the image centre, then a shift."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    t = sitk.VersorRigid3DTransform()
    t.SetCenter(centre)
    t.SetRotation((1.0, 1.0, 0.0), float(np.deg2rad(angle_deg)))
    t.SetTranslation(shift_mm)
    return t


def _posed(image: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The same head after a rigid motion, on a zero-padded grid (nothing cut off)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    grid = sitk.ConstantPad(image, [30, 30, 4], [30, 30, 4], 0.0)
    return sitk.Resample(image, grid, transform, sitk.sitkLinear, 0.0)


def _remap(mask: sitk.Image, grid: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    moved = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0)
    return sitk.Cast(moved >= 0.5, sitk.sitkUInt8)


# --- synthetic heads: a brain-like ellipsoid, with or without scalp, skull and noisy air


def _head(skull_on: bool, noisy_air: bool, shape=(40, 48, 44), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=float)
    c = [(n - 1) / 2 for n in shape]

    def ellipsoid(scale):
        return (((z - c[0]) / (0.30 * shape[0] * scale)) ** 2
                + ((y - c[1]) / (0.30 * shape[1] * scale)) ** 2
                + ((x - c[2]) / (0.30 * shape[2] * scale)) ** 2) <= 1

    voxels = np.zeros(shape)
    if skull_on:
        voxels[ellipsoid(1.45)] = 220.0  # scalp fat: bright on T1
        voxels[ellipsoid(1.3)] = 25.0  # skull: dark
    voxels[ellipsoid(1.0)] = 100.0 + 10 * rng.standard_normal(ellipsoid(1.0).sum())
    if noisy_air:
        voxels += np.abs(3.0 * rng.standard_normal(shape))  # Rician-like air noise
    return _image(voxels, spacing=(2.0, 2.0, 2.0))


@pytest.mark.parametrize(("skull_on", "noisy_air", "expected"), [
    (False, False, True),  # a brain alone on exact zeros: skull-stripped
    (True, True, False),  # head with scalp, skull and noisy air
    (True, False, False),  # head with scalp on exact-zero air (noise-free simulation)
    (False, True, False),  # brain-like object in noisy air: not a stripped scan
])
def test_looks_skull_stripped_on_synthetic_heads(skull_on, noisy_air, expected):
    assert brain.looks_skull_stripped(_head(skull_on, noisy_air)) is expected


def test_skull_on_head_on_a_zero_padded_grid_is_not_stripped():
    """Resampling pads with exact zeros: the noisy air inside the old field of view still counts."""
    head = _head(True, True, shape=(36, 40, 40))
    posed = _posed(head, _rigid(head, 10.0, (6.0, -6.0, 3.0)))
    e = brain.skull_stripped_evidence(posed)
    assert e["border_constant_share"] > 0.9 and not brain.looks_skull_stripped(posed)


def test_looks_skull_stripped_on_an_empty_image():
    assert brain.looks_skull_stripped(_image(np.zeros((8, 8, 8)))) is False


def test_looks_skull_stripped_on_real_scans(shared_data):
    mri = shared_data / "mri"
    for path in sorted(mri.glob("BraTS-*/*.nii.gz")):
        assert brain.looks_skull_stripped(sitk.ReadImage(str(path))), path.name
    ref = sitk.ReadImage(str(shared_data / TCGA / "TCGA-FG-6692_t1c_brainmask.nii.gz"))
    for kind in ("t1", "t1c"):
        scan = sitk.ReadImage(str(shared_data / TCGA / f"TCGA-FG-6692_{kind}.nii.gz"))
        assert not brain.looks_skull_stripped(scan), kind
        posed = _posed(scan, _rigid(scan, 10.0, (10.0, -10.0, 5.0)))
        assert not brain.looks_skull_stripped(posed), f"{kind} posed"
        stripped = sitk.Mask(scan, sitk.Cast(ref > 0, sitk.sitkUInt8))
        assert brain.looks_skull_stripped(stripped), f"{kind} with its brain mask applied"


# --- geometry and deepbet's resampling


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS
    (0, 0, 1, 1, 0, 0, 0, -1, 0),  # sagittal-like permutation with a flip
])
def test_ras_order_round_trips_and_runs_right_anterior_superior(direction):
    image = _image(np.zeros((3, 4, 5)), direction=[float(d) for d in direction])
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
    brain._session.cache_clear()
    try:
        with pytest.raises(ModelError, match="brain-extraction network is missing"):
            brain.extract_brain(_head(True, True))
    finally:
        brain._session.cache_clear()


def test_blank_scan_has_no_brain():
    with pytest.raises(InputError, match="found no brain"):
        brain.extract_brain(_image(np.zeros((20, 24, 24))))


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
    motion = _rigid(scan, 10.0, (10.0, -10.0, 5.0))  # 10 deg, 15 mm
    posed_mask = brain.extract_brain(_posed(scan, motion))
    back = _remap(posed_mask, scan, motion.GetInverse())
    assert _dice(back, ref) >= 0.93  # measured 0.96-0.97 over three poses

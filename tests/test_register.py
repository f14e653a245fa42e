"""Rigid registration: accuracy for known motions (TRE), reproducibility and the QA verdict."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.geometry.register import register_rigid
from ricecli.geometry.resample import working_image
from ricecli.geometry.template import load_template


def _moved(volume: sitk.Image, angles_deg, shift_mm, spacing, direction):
    """(fixed, truth): `volume` resampled through a known rigid motion onto a new grid."""
    c = volume.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in volume.GetSize()])
    truth = sitk.Euler3DTransform()
    truth.SetCenter(c)
    truth.SetRotation(*np.radians(angles_deg))
    truth.SetTranslation(shift_mm)
    extent = np.asarray(volume.GetSize()) * np.asarray(volume.GetSpacing())
    size = [int(n) for n in np.ceil(extent / np.asarray(spacing)) + 10]
    d = np.asarray(direction, float).reshape(3, 3)
    centre = np.asarray(truth.GetInverse().TransformPoint(c))
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(d.ravel().tolist())
    grid.SetOrigin((centre - d @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)).tolist())
    return sitk.Resample(volume, grid, truth, sitk.sitkLinear, 0.0), truth


def tre_mm(reg_transform, truth, mask: sitk.Image, step: int = 50) -> float:
    """Mean error over brain voxels of `mask` (moving frame) between estimate and truth."""
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[::step][:, ::-1]
    q = [mask.TransformIndexToPhysicalPoint([int(i) for i in v]) for v in idx]
    inv = truth.GetInverse()
    err = [np.linalg.norm(np.subtract(reg_transform.TransformPoint(inv.TransformPoint(p)), p))
           for p in q]
    return float(np.mean(err))


@pytest.fixture(scope="module")
def template_2mm():
    t = load_template()
    return working_image(t.t1 * 1000.0), working_image(sitk.Cast(t.mask, sitk.sitkFloat32)) > 0.5


@pytest.mark.slow
def test_known_motion_recovered_and_reproducible(template_2mm):
    volume, mask = template_2mm
    ras = [-1, 0, 0, 0, -1, 0, 0, 0, 1]
    fixed, truth = _moved(volume, (8, -6, 5), (10, -12, 6), (2.2, 2.2, 2.2), ras)
    a = register_rigid(fixed, volume)
    b = register_rigid(fixed, volume)
    assert tre_mm(a.transform, truth, mask) < 1.0
    # fixed sampling seed: the same answer (threads only reorder float sums: ~1e-9)
    assert np.allclose(a.transform.GetParameters(), b.transform.GetParameters(), atol=1e-5)
    assert not a.qa["likely_failed"] and a.qa["ncc"] > 0.9 and a.iterations > 0 and a.seconds > 0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["brats", "tcga"])
def test_tre_on_real_scans_below_1mm(shared_data, case):
    """10 deg / 15 mm motions onto a grid of other geometry; real skull-stripped and skull-on."""
    mri = shared_data / "mri"
    if case == "brats":
        volume = sitk.ReadImage(str(mri / "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"),
                                sitk.sitkFloat32)
        mask = volume > 0
        fixed, truth = _moved(volume, (10, -8, 6), (9, -9, 8.5), (1.2, 1.2, 1.2),
                              [0, 1, 0, -1, 0, 0, 0, 0, 1])
    else:
        volume = sitk.ReadImage(str(mri / "TCGA-FG-6692/TCGA-FG-6692_t1c.nii.gz"), sitk.sitkFloat32)
        mask = sitk.ReadImage(str(mri / "TCGA-FG-6692/TCGA-FG-6692_t1c_brainmask.nii.gz")) > 0
        fixed, truth = _moved(volume, (-7, 10, 5), (-8, 6, -11), (1.0, 1.0, 1.5),
                              [-1, 0, 0, 0, -1, 0, 0, 0, 1])
    reg = register_rigid(fixed, volume)
    assert tre_mm(reg.transform, truth, mask) < 1.0
    assert not reg.qa["likely_failed"]


def test_single_threaded_blocks_overlapping_on_two_threads_restore_the_count():
    """prepare runs two registrations side by side: while either runs ITK stays on one thread,
    and the count is restored only when both are done (not left at 1, not restored early)."""
    import threading

    from ricecli.geometry.register import single_threaded_itk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with single_threaded_itk():
            first_in.set()
            second_done.wait(10)
            seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())

    try:
        worker = threading.Thread(target=first)
        worker.start()
        first_in.wait(10)
        with single_threaded_itk():
            seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
        second_done.set()  # the second block ended first: the first still needs one thread
        worker.join(10)
        assert seen == [1, 1]
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 2
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)

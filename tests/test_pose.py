"""Model space follows the anatomy, not the pose, and the same inputs give the same bits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.geometry.axes import principal_axes_start
from ricecli.geometry.register import register_rigid
from ricecli.geometry.resample import (
    antialiased,
    foreground_mask,
    resample_to_grid,
    resolution_mm,
    working_image,
)
from ricecli.geometry.template import load_template, model_space_grid
from ricecli.inference.calibration import calibrate_members
from ricecli.inference.engine import open_engine
from ricecli.inference.model import load_model
from ricecli.prepare import CaseInputs, prepare_case, to_tensor
from ricecli.simulate.scanner import posed_copy
from ricecli.simulate.treatment import gaussian_dose
from ricecli.spec import PRESETS

SPEC = PRESETS["edge"]
# (degrees about x, y, z; mm): up to the 10 deg / 15 mm of issue 11's procedure
POSES = (((2.0, -3.0, 1.0), (3.0, -2.0, 4.0)),
         ((10.0, -6.0, 4.0), (15.0, -10.0, 8.0)),
         ((-7.0, 9.0, -10.0), (-12.0, 14.0, -6.0)))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_principal_axes_start_recovers_a_rotation():
    """The start lays the template brain's axes onto a rotated copy's: within a few degrees."""
    mask = working_image(sitk.Cast(load_template().mask, sitk.sitkFloat32), 3.0) > 0.5
    rotated = posed_copy(sitk.Cast(mask, sitk.sitkFloat32), (12.0, -8.0, 6.0), (10, -5, 8)) > 0.5
    start = principal_axes_start(mask, rotated)
    ones = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[::40][:, ::-1]
    points = [mask.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in ones]
    # where each template point lies in the rotated copy, exactly
    size = np.asarray(mask.GetSize())
    motion = sitk.Euler3DTransform()
    motion.SetCenter(mask.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    motion.SetRotation(*np.radians((12.0, -8.0, 6.0)))
    motion.SetTranslation((10.0, -5.0, 8.0))
    truth = motion.GetInverse()
    err = [np.linalg.norm(np.subtract(start.TransformPoint(p), truth.TransformPoint(p)))
           for p in points]
    assert np.mean(err) < 4.0  # a start, not the answer: registration refines it


def test_foreground_mask_of_a_z_scored_image():
    """Negative background (z-scored, offset images): the head, not the voxels above 0."""
    t1 = load_template().t1
    arr = sitk.GetArrayFromImage(t1)
    z = sitk.GetImageFromArray((arr - arr[arr > 0.2].mean()) / arr[arr > 0.2].std())
    z.CopyInformation(t1)
    a = sitk.GetArrayViewFromImage(foreground_mask(z)) > 0
    b = sitk.GetArrayViewFromImage(foreground_mask(t1)) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99
    reg = register_rigid(z, z, same_contrast=True)
    assert reg.qa["on_head"] > 0.95 and not reg.qa["likely_failed"]


def test_prepare_gives_the_same_bits_run_after_run_and_across_threads(synthetic_case):
    """Same inputs, same bits: registration is single-threaded inside, every other step is
    per voxel, so neither a rerun nor ITK's thread count changes a bit."""
    inputs = CaseInputs(**synthetic_case)
    first = prepare_case(inputs, SPEC)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        again = prepare_case(inputs, SPEC)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    for name in first.channels:
        assert np.array_equal(first.channels[name], again.channels[name]), name
    assert first.qa.measures["registration"]["event_to_template"]["rotation_deg"] == \
        again.qa.measures["registration"]["event_to_template"]["rotation_deg"]


def _in_model_space(image: sitk.Image, isotropic: bool) -> np.ndarray:
    """The image's centre placed at the model-space centre, resampled onto the model grid."""
    grid = model_space_grid(SPEC.model_space)
    size = np.asarray(image.GetSize())
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    model_centre = np.asarray(grid.TransformContinuousIndexToPhysicalPoint(
        ((np.asarray(grid.GetSize()) - 1) / 2).tolist()))
    matrix = np.eye(4)
    matrix[:3, 3] = centre - model_centre
    return resample_to_grid(image, grid, matrix, isotropic=isotropic)


def test_isotropic_smoothing_leaves_1mm_scans_bit_identical_and_evens_thick_slices():
    """Scans finer than model space are smoothed exactly as before (same bits); a thick-slice
    scan is smoothed in-plane to its slab: a point blurs alike along every axis."""
    t1 = sitk.Cast(load_template().t1, sitk.sitkFloat32)  # 1 mm
    assert np.array_equal(_in_model_space(t1, True), _in_model_space(t1, False))
    point = sitk.Image([96, 96, 24], sitk.sitkFloat32)  # 1 x 1 x 6 mm, a point at the centre
    point.SetSpacing([1.0, 1.0, 6.0])
    point[48, 48, 12] = 1.0

    def spread(arr: np.ndarray, axis: int) -> float:  # sd in mm about the centre (z, y, x)
        profile = arr.sum(axis=tuple(a for a in range(3) if a != axis))
        mm = (np.arange(profile.size) - profile.size // 2) * (6.0 if axis == 0 else 1.0)
        return float(np.sqrt((profile * mm**2).sum() / profile.sum()))

    before = sitk.GetArrayFromImage(antialiased(point, 3.0))
    now = sitk.GetArrayFromImage(antialiased(point, resolution_mm(point, 3.0, True)))
    # before: 1.41 mm in-plane, the slab axis untouched; now in-plane sigma
    # 0.5 * sqrt(6^2 - 1^2) = 2.96 mm, the scale of the 6 mm slab itself
    assert 1.3 < spread(before, 2) < 1.5 and spread(before, 0) == 0
    assert 2.8 < spread(now, 2) < 3.1 and 2.8 < spread(now, 1) < 3.1 and spread(now, 0) == 0


def _real_case(shared_data, tmp_path, name: str, event: str, post_op: str) -> tuple:
    folder = shared_data / "mri" / name
    dose = tmp_path / "dose.nii.gz"
    sitk.WriteImage(gaussian_dose(sitk.ReadImage(str(folder / post_op), sitk.sitkFloat32)),
                    str(dose))
    return sitk.ReadImage(str(folder / event), sitk.sitkFloat32), folder / post_op, dose


@pytest.mark.slow
def test_a_real_case_classified_three_times_gives_the_same_bits(shared_data, tmp_path):
    """The issue's case: a BraTS t1n -> t1c pair with a 60 Gy dose, three runs, one answer."""
    _, post_op, dose = _real_case(shared_data, tmp_path, "BraTS-GLI-00001-000",
                                  "BraTS-GLI-00001-000-t1c.nii.gz",
                                  "BraTS-GLI-00001-000-t1n.nii.gz")
    event = shared_data / "mri/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"
    model = load_model(None)
    engine = open_engine(model, "cpu")
    runs = []
    for _ in range(3):
        case = prepare_case(CaseInputs(post_op, event, dose), model.spec)
        x = to_tensor(case, model.spec)
        runs.append((x, engine.run(x[None])[0]))
    for x, probs in runs[1:]:
        assert np.array_equal(x, runs[0][0])
        assert np.array_equal(probs, runs[0][1])


@pytest.mark.slow
@pytest.mark.parametrize("name,event,post_op,poses,min_corr,max_spread", [
    ("BraTS-GLI-00001-000", "BraTS-GLI-00001-000-t1c.nii.gz", "BraTS-GLI-00001-000-t1n.nii.gz",
     POSES, 0.97, 0.02),
    # skull on, 5.5 mm slices (issue 21: >= 0.96; 0.954 before the isotropic smoothing of
    # thick-slice scans, 0.966 with it): benchmarks/pose.py
    ("TCGA-FG-6692", "TCGA-FG-6692_t1c.nii.gz", "TCGA-FG-6692_t1.nii.gz", POSES, 0.96,
     0.04),
])
def test_the_same_scan_in_other_poses_gives_the_same_channels_and_answer(
        shared_data, tmp_path, name, event, post_op, poses, min_corr, max_spread):
    """The answer compared is the reported one: the calibrated p(recurrence)."""
    event_image, post_path, dose = _real_case(shared_data, tmp_path, name, event, post_op)
    model = load_model(None)
    engine = open_engine(model, "cpu")
    cases, p_rec = [], []
    for i, (angles, shift) in enumerate(poses):
        path = tmp_path / f"event{i}.nii.gz"
        sitk.WriteImage(posed_copy(event_image, angles, shift), str(path))
        case = prepare_case(CaseInputs(post_path, path, dose), model.spec)
        assert not case.qa.measures["registration"]["event_to_template"]["likely_failed"]
        cases.append(case)
        members = engine.run(to_tensor(case, model.spec)[None])[1][0]
        p_rec.append(float(calibrate_members(members, model.spec.calibration).mean(axis=0)[1]))
    for a, b in itertools.combinations(cases, 2):
        for channel in a.channels:
            assert _corr(a.channels[channel], b.channels[channel]) >= min_corr, channel
    assert max(p_rec) - min(p_rec) <= max_spread

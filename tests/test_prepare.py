"""Case preparation: known anatomy in, model-space channels out, whatever the storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from prepare_fixtures import (
    DOSE_PEAK_LPS,
    EVENT_POSE,
    dose_in,
    grid,
    oblique,
    pose,
    scan,
    write_case,
)

from ricecli.geometry.resample import template_soft_mask
from ricecli.geometry.template import load_template
from ricecli.io.dicom_write import write_mr_series, write_rtdose
from ricecli.prepare import CaseInputs, prepare_case, to_tensor, write_prepared
from ricecli.spec import PRESETS

SPEC = PRESETS["edge"]


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="module")
def base(case_files):
    return prepare_case(CaseInputs(**case_files), SPEC)


def _peak_world(case) -> np.ndarray:
    d = case.channels["dose"]
    zyx = np.unravel_index(int(d.argmax()), d.shape)
    return np.asarray(case.reference.TransformIndexToPhysicalPoint([int(i) for i in zyx[::-1]]))


def test_channels_normalised_and_zero_outside_the_brain(base):
    """T1 channels are z-scored in the brain and fade out over the template's soft brain edge,
    a mask fixed in model space (so that the edge does not move with the pose)."""
    brain = base.brain_mask > 0
    soft = template_soft_mask(base.reference)
    assert np.array_equal(base.brain_mask, (soft >= 0.5).astype(np.uint8))
    nearest = sitk.GetArrayFromImage(sitk.Resample(load_template().mask, base.reference,
                                                   sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
    assert 2 * (brain & nearest).sum() / (brain.sum() + nearest.sum()) > 0.97
    for name in ("post_op", "event"):
        v = base.channels[name]
        assert v.dtype == np.float32 and v.shape == SPEC.model_space.shape_zyx
        z = v[brain] / soft[brain]  # the z-score before the soft edge: over the brain's voxels
        assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
        assert not v[soft == 0].any()
    assert not base.channels["dose"][soft == 0].any()
    # both T1 channels are the same anatomy, registered: near-identical after z-scoring
    assert np.corrcoef(base.channels["post_op"][brain], base.channels["event"][brain])[0, 1] > 0.97
    assert not any(r["likely_failed"] for r in base.qa.measures["registration"].values())


def test_dose_peak_lands_on_its_anatomy_and_qa_is_filled(base):
    assert np.linalg.norm(_peak_world(base) - DOSE_PEAK_LPS) < 3.0  # one 3 mm voxel
    assert base.channels["dose"].max() == pytest.approx(60.0 / SPEC.dose_scale_gy, abs=0.02)
    dose = base.qa.measures["dose"]
    assert dose["coverage_of_brain"] > 0.99 and dose["max_gy"] > 59.5
    assert set(base.timings_s) == {"read", "brain", "register", "resample", "normalise"}
    assert set(base.qa.measures["geometry"]) == {"post_op", "event", "dose"}


def test_model_to_event_maps_model_points_onto_the_event_scan(base):
    truth = pose(*EVENT_POSE).GetInverse()  # template (= model) point -> event point
    for p in ([0.0, 17.0, 7.0], DOSE_PEAK_LPS.tolist(), [-40.0, -20.0, 30.0]):
        got = base.model_to_event.TransformPoint(p)
        assert np.linalg.norm(np.subtract(got, truth.TransformPoint(p))) < 1.0


def test_to_tensor_and_write_prepared(base, tmp_path):
    x = to_tensor(base, SPEC)
    assert x.shape == (3, *SPEC.model_space.shape_zyx) and x.dtype == np.float32
    assert np.array_equal(x[2], base.channels["dose"])
    assert to_tensor(base, SPEC.with_channels(("dose", "event"))).shape[0] == 2
    write_prepared(base, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dose.nii.gz", "event.nii.gz", "post_op.nii.gz", "qa.json"]
    img = sitk.ReadImage(str(tmp_path / "event.nii.gz"))
    assert img.GetSize() == SPEC.model_space.size_xyz
    assert np.allclose(img.GetOrigin(), SPEC.model_space.origin_mm)
    assert np.array_equal(sitk.GetArrayFromImage(img), base.channels["event"])
    assert json.loads((tmp_path / "qa.json").read_text())["dose"]["max_gy"] > 59.5


def _same_channels(a, b, t1_tol: float, dose_tol: float) -> None:
    brain = a.brain_mask > 0
    for name in ("post_op", "event"):
        assert np.abs(a.channels[name] - b.channels[name])[brain].mean() < t1_tol, name
    assert np.abs(a.channels["dose"] - b.channels["dose"]).max() < dose_tol


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["ras", "oblique", "nrrd", "dicom"])
def test_same_anatomy_any_storage_same_channels(base, case_files, tmp_path, storage):
    """Tolerances: RAS/NRRD/DICOM store the same voxels (DICOM as int16 + rescale), only the
    registration's random samples fall elsewhere: T1 channels agree to ~0.01 SD, dose to <1 %.
    An oblique grid is a second interpolation of the anatomy: ~0.1 SD, dose to 2 %."""
    event = sitk.ReadImage(str(case_files["event"]))
    if storage == "ras":
        path = tmp_path / "event.nii.gz"
        sitk.WriteImage(sitk.DICOMOrient(event, "RAS"), str(path))
    elif storage == "oblique":
        path = tmp_path / "event.nii.gz"
        sitk.WriteImage(scan(pose(*EVENT_POSE), grid((100, 110, 90), 2.0, oblique())), str(path))
    elif storage == "nrrd":
        path = tmp_path / "event.nrrd"
        sitk.WriteImage(event, str(path))
    else:
        path = write_mr_series(event, tmp_path / "event_dicom")
    other = prepare_case(CaseInputs(case_files["post_op"], path, case_files["dose"]), SPEC)
    tight = storage != "oblique"
    _same_channels(base, other, 0.03 if tight else 0.15, 0.01 if tight else 0.02)


@pytest.mark.slow
def test_dose_as_rtdose_and_in_another_frame(base, case_files, tmp_path):
    """RTDOSE of the same grid gives the same dose channel (uint32 x DoseGridScaling ~1e-6 Gy);
    a dose defined on a planning scan's frame, named with dose_frame, lands on the same anatomy."""
    rtdose = write_rtdose(sitk.ReadImage(str(case_files["dose"])), tmp_path / "RD.dcm")
    same = prepare_case(CaseInputs(case_files["post_op"], case_files["event"], rtdose), SPEC)
    assert np.abs(same.channels["dose"] - base.channels["dose"]).max() < 1e-3
    planning = pose((0.1, 0.05, -0.12), (12.0, 6.0, -9.0))
    planning_path = tmp_path / "planning.nii.gz"
    sitk.WriteImage(scan(planning, grid((96, 112, 96), 2.0)), str(planning_path))
    dose_path = tmp_path / "dose_planning.nii.gz"
    sitk.WriteImage(dose_in(planning), str(dose_path))
    framed = prepare_case(CaseInputs(case_files["post_op"], case_files["event"], dose_path,
                                     dose_frame=planning_path), SPEC)
    assert "dose_frame_to_post_op" in framed.qa.measures["registration"]
    assert np.linalg.norm(_peak_world(framed) - DOSE_PEAK_LPS) < 3.0
    # vs the analytic dose in model space: 0.05 = 3 Gy, ~2 mm on the steepest slope (the spread
    # of the template registration on this smooth anatomy; typical runs measure 0.004)
    brain = np.argwhere(framed.brain_mask > 0)
    world = np.asarray(framed.reference.GetOrigin()) + brain[:, ::-1] * SPEC.model_space.spacing_mm
    truth = np.exp(-((world - DOSE_PEAK_LPS) ** 2).sum(1) / (2 * 25.0**2))
    truth *= template_soft_mask(framed.reference)[tuple(brain.T)]  # the soft brain edge
    assert np.abs(framed.channels["dose"][tuple(brain.T)] - truth).max() < 0.05


@pytest.mark.slow
def test_user_mask_in_the_event_frame(base, case_files, tmp_path):
    event = sitk.ReadImage(str(case_files["event"]))
    mask = sitk.Resample(load_template().mask, event, pose(*EVENT_POSE), sitk.sitkNearestNeighbor)
    path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(mask, str(path))
    case = prepare_case(CaseInputs(**case_files, mask=path), SPEC)
    a, b = case.brain_mask > 0, base.brain_mask > 0
    assert case.qa.measures["brain_mask"] == "user"
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95


def test_side_by_side_reports_errors_in_the_order_the_steps_are_named():
    """Two steps run at once, but a refusal names the same input as when they ran in order."""
    from concurrent.futures import ThreadPoolExecutor

    from ricecli.errors import InputError
    from ricecli.prepare import side_by_side

    def refuse(name: str):
        def step() -> None:
            raise InputError("refused", name)
        return step

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert side_by_side(pool, lambda: 1, lambda: 2) == (1, 2)
        for first, second, named in ((refuse("post_op"), refuse("event"), "post_op"),
                                     (lambda: 1, refuse("event"), "event"),
                                     (refuse("post_op"), lambda: 2, "post_op")):
            with pytest.raises(InputError) as err:
                side_by_side(pool, first, second)
            assert str(err.value.path) == named

"""The simulated cohort: determinism, classes, native geometry, plan dose, lesions, prepare, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ricecli.simulate.case import SimConfig, case_rng, head_rng, simulate_case
from ricecli.simulate.cohort import MANIFEST_COLUMNS, write_case
from ricecli.simulate.scanner import (
    POSE_FROM_TEMPLATE,
    POSE_LIMITS,
    angle_deg,
    matrix_transform,
    visit_poses,
)

FAST = SimConfig(voxel_scale=2.0)  # coarse native grids: same content, ~8x fewer voxels
COHORT_SEED = 2  # a seed whose first 3 cases hold both classes (asserted below)
COHORT_N = 3
COHORT_SKULL_ON_SHARE = 0.4  # seed 2: case 0 skull-stripped, cases 1 and 2 skull-on


def _arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


@pytest.fixture(scope="module")
def case():
    return simulate_case(0, 11, FAST)


@pytest.fixture(scope="module")
def skull_on_pair():
    """One patient (seed 11, case 1) scanned skull-on and skull-stripped."""
    on = simulate_case(1, 11, SimConfig(voxel_scale=2.0, skull_on_share=1.0))
    off = simulate_case(1, 11, SimConfig(voxel_scale=2.0, skull_on_share=0.0))
    return on, off


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A small cohort written by the real CLI in a subprocess (2 worker processes)."""
    out = tmp_path_factory.mktemp("sim") / "cohort"
    cmd = [sys.executable, "-m", "ricecli.cli", "simulate", "--n", str(COHORT_N), "--seed",
           str(COHORT_SEED), "--out", str(out), "--jobs", "2", "--voxel-scale", "2",
           "--test-fraction", "0.34", "--skull-on-share", str(COHORT_SKULL_ON_SHARE)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def _manifest(root: Path) -> list[dict]:
    with open(root / "manifest.csv") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_same_voxels_and_other_seeds_differ(case):
    again = simulate_case(0, 11, FAST)
    for a, b in [(case.post_op, again.post_op), (case.event, again.event),
                 (case.dose_gy, again.dose_gy), (case.lesion_mask, again.lesion_mask)]:
        assert a.GetSize() == b.GetSize() and a.GetDirection() == b.GetDirection()
        assert np.array_equal(_arr(a), _arr(b))
    assert case.truth == again.truth
    other = simulate_case(1, 11, FAST)
    assert other.post_op.GetSize() != case.post_op.GetSize() or not np.array_equal(
        _arr(other.post_op), _arr(case.post_op))


def test_native_geometry_differs_between_visits(case):
    t = case.truth
    post, event = t["post_op_scan"], t["event_scan"]
    assert post["direction"] != event["direction"] or post["spacing_mm"] != event["spacing_mm"]
    m_post = np.asarray(post["scanner_to_anatomy"])
    m_event = np.asarray(event["scanner_to_anatomy"])
    delta = np.linalg.inv(m_post) @ m_event  # event scanner -> post-op scanner
    angle = np.degrees(np.arccos(np.clip((np.trace(delta[:3, :3]) - 1) / 2, -1, 1)))
    assert 0.05 < angle < 25.0
    assert case.post_op.GetPixelID() == sitk.sitkInt16 and _arr(case.post_op).max() > 200
    # the dose lives in the post-op frame on its own axis-aligned 2-3 mm grid
    assert case.dose_gy.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert all(2.0 <= s <= 3.0 for s in case.dose_gy.GetSpacing())


def test_lesion_lies_inside_the_imaged_brain(case):
    mask = _arr(case.lesion_mask) > 0
    event = _arr(case.event)
    assert mask.sum() > 20
    assert np.mean(event[mask] > 0) > 0.97  # background (outside the brain) is exactly 0
    centre = case.truth["lesion"]["centre_event_mm"]
    idx = case.event.TransformPhysicalPointToIndex(centre)
    assert event[idx[2], idx[1], idx[0]] > 0
    # the truth's pose maps the event-frame centre back onto the anatomy-frame centre
    back = matrix_transform(case.truth["event_scan"]["scanner_to_anatomy"]).TransformPoint(centre)
    assert np.allclose(back, case.truth["lesion"]["centre_anatomy_mm"], atol=0.05)


def test_montage_renders(case, tmp_path):
    from PIL import Image

    from ricecli.simulate.montage import render

    path = render([case], tmp_path / "m.png")
    img = np.asarray(Image.open(path))
    assert img.shape[0] > 500 and img.std() > 10


@pytest.mark.slow
def test_dicom_output_reads_back(case, tmp_path):
    from ricecli.io.dose import read_dose
    from ricecli.io.volume import read_mr

    row = write_case(case, tmp_path, "dicom")
    post = read_mr(tmp_path / row["post_op"])  # the reader may re-order the slices
    assert post.GetNumberOfPixels() == case.post_op.GetNumberOfPixels()
    same_grid = sitk.Resample(post, case.post_op, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.mean(_arr(same_grid) == _arr(case.post_op)) > 0.999
    dose = read_dose(tmp_path / row["dose"])
    assert np.allclose(_arr(dose), _arr(case.dose_gy), atol=1e-3)


@pytest.mark.slow
def test_cli_cohort_manifest_classes_and_dose(cohort):
    rows = _manifest(cohort)
    assert len(rows) == COHORT_N and set(MANIFEST_COLUMNS) <= set(rows[0])
    assert {r["label"] for r in rows} == {"RICE", "recurrence"}
    assert {r["split"] for r in rows} <= {"cv", "test"} and "test" in {r["split"] for r in rows}
    sizes = set()
    for r in rows:
        for key in ("post_op", "event", "dose", "lesion_mask", "truth"):
            assert (cohort / r[key]).is_file(), r[key]
        truth = json.loads((cohort / r["truth"]).read_text())
        assert truth["label"] == r["label"] and r["dose_unit"] == "Gy"
        dose_max = float(_arr(sitk.ReadImage(str(cohort / r["dose"]))).max())
        rx = float(r["prescription_gy"])
        if rx == 60.0:
            assert 55.0 <= dose_max <= 65.0
        else:
            assert 0.9 * rx <= dose_max <= 1.1 * rx
        img = sitk.ReadImage(str(cohort / r["event"]))
        sizes.add((img.GetSize(), img.GetDirection()))
        assert truth["skull_on"] == bool(int(r["skull_on"]))
        brain = sitk.ReadImage(str(cohort / r["mask"]))  # the manifest's brain mask column
        assert brain.GetSize() == img.GetSize() and _arr(brain).sum() > 1000
    assert len(sizes) == COHORT_N  # grids differ between cases
    assert [int(r["skull_on"]) for r in rows] == [0, 1, 1]
    # 2 worker processes wrote the same bits as one process does
    config = SimConfig(voxel_scale=2.0, skull_on_share=COHORT_SKULL_ON_SHARE)
    for i in (0, 1):
        again = simulate_case(i, COHORT_SEED, config)
        written = sitk.ReadImage(str(cohort / rows[i]["event"]))
        assert np.array_equal(_arr(written), _arr(again.event))


def test_cli_refuses_non_empty_out_and_bad_options(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    base = [sys.executable, "-m", "ricecli.cli", "simulate", "--n", "1"]
    done = subprocess.run([*base, "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "not empty" in done.stderr
    done = subprocess.run([*base, "--out", str(tmp_path / "new"), "--format", "png"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--format" in done.stderr
    done = subprocess.run([*base, "--out", str(tmp_path / "new"), "--skull-on-share", "1.5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--skull-on-share must lie in [0, 1]" in done.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_every_case_passes_prepare(cohort):
    from ricecli.prepare import CaseInputs, prepare_case
    from ricecli.spec import PRESETS

    spec = PRESETS["edge"]
    for r in _manifest(cohort):
        prepared = prepare_case(
            CaseInputs(post_op=cohort / r["post_op"], event=cohort / r["event"],
                       dose=cohort / r["dose"], dose_unit=r["dose_unit"]), spec)
        for name in spec.channels:
            assert prepared.channels[name].shape == spec.model_space.shape_zyx
            assert np.isfinite(prepared.channels[name]).all()
        dose = prepared.channels["dose"][prepared.brain_mask > 0]
        assert 0.85 <= dose.max() * spec.dose_scale_gy / float(r["prescription_gy"]) <= 1.15
        # the lesion centre lands inside the model-space brain
        centre = [float(r[k]) for k in ("lesion_x_mm", "lesion_y_mm", "lesion_z_mm")]
        p = prepared.model_to_event.GetInverse().TransformPoint(centre)
        idx = prepared.reference.TransformPhysicalPointToIndex(p)
        near = prepared.brain_mask[max(idx[2] - 1, 0):idx[2] + 2, max(idx[1] - 1, 0):idx[1] + 2,
                                   max(idx[0] - 1, 0):idx[0] + 2]
        assert near.any()


def test_deformed_brain_stays_inside_the_working_grid():
    from ricecli.simulate.anatomy import build_anatomy

    for i in range(2):
        brain = build_anatomy(case_rng(4, i), 2.0, 2.5).brain
        assert brain.sum() > 150_000  # ~1.4 l at 2 mm
        for border in (brain[0], brain[-1], brain[:, 0], brain[:, -1], brain[:, :, 0],
                       brain[:, :, -1]):
            assert not border.any()


def test_plan_dose_is_finite_even_with_extreme_fall_off_noise():
    """Regression: seed 2026 case 48 once drew a negative fall-off length and NaN doses."""
    case = simulate_case(48, 2026, SimConfig())
    assert np.isfinite(sitk.GetArrayViewFromImage(case.dose_gy)).all()


def _outside_brain(case, dilations: int = 3) -> np.ndarray:
    """Event voxels more than `dilations` voxels from the true brain mask."""
    brain = _arr(case.brain_mask) > 0
    return ~ndimage.binary_dilation(brain, np.ones((3, 3, 3), bool), iterations=dilations)


def test_skull_on_scans_have_dark_bone_and_bright_fat_around_the_brain(skull_on_pair):
    on, off = skull_on_pair
    assert on.truth["skull_on"] and not off.truth["skull_on"]
    assert 6.0 <= on.truth["head"]["skull_mm"] <= 8.0 and off.truth["head"] is None
    for scan in (on.event, on.post_op):
        assert scan.GetPixelID() == sitk.sitkInt16
    event = _arr(on.event).astype(float)
    brain = _arr(on.brain_mask) > 0
    wm = np.percentile(event[brain], 75)  # ~white matter
    img = sitk.Cast(on.brain_mask, sitk.sitkUInt8)
    dist = _arr(sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                             useImageSpacing=True))
    shell = event[(dist > 3) & (dist < 20)] / wm  # the head's layers, 3-20 mm from the brain
    assert np.mean(shell < 0.2) > 0.05  # CSF and cortical bone: dark
    assert np.mean(shell > 1.1) > 0.02  # subcutaneous fat: brighter than white matter
    assert 0.3 < np.mean(shell) < 0.8  # marrow, muscle, skin: in between
    outside = event[_outside_brain(on)] / wm
    assert np.mean(outside > 0.3) > 0.04  # a head around the brain
    assert np.mean(outside > 0) > 0.9 and np.median(outside) < 0.1  # noisy air, as scanned
    # the head is closed: on lines through the brain's centre, every way out of the brain
    # crosses dark bone, then tissue brighter than bone (scalp fat), then air
    k, j, i = (int(v) for v in np.round(ndimage.center_of_mass(brain)))
    step = on.event.GetSpacing()[0]
    for line, in_brain in ((event[k, j, :], brain[k, j, :]), (event[k, :, i], brain[k, :, i])):
        edge = np.flatnonzero(in_brain)
        for start, direction in ((edge[-1], 1), (edge[0], -1)):
            ray = line[start::direction][: int(40 / step)] / wm
            fat = int(np.argmax(ray))
            assert ray[fat] > 0.8 and ray[:fat].min() < 0.3  # CSF and bone inside the fat
            assert ray[fat:].min() < 0.2  # then air (noise only)
    # the skull-stripped twin: background exactly 0 beyond the brain's edge
    outside = _outside_brain(off)
    assert np.mean(_arr(off.event)[outside] != 0) < 1e-4
    assert np.mean(_arr(off.post_op) == 0) > 0.3


def test_skull_on_is_a_per_patient_choice_that_changes_nothing_else(skull_on_pair):
    on, off = skull_on_pair
    assert on.label == off.label and on.truth["lesion"] == off.truth["lesion"]
    assert on.truth["plan"] == off.truth["plan"]
    for scan in ("post_op_scan", "event_scan"):
        assert on.truth[scan]["scanner_to_anatomy"] == off.truth[scan]["scanner_to_anatomy"]
        assert on.truth[scan]["protocol"] == off.truth[scan]["protocol"]
    assert np.array_equal(_arr(on.dose_gy), _arr(off.dose_gy))
    # the field of view covers the head: larger than the skull-stripped one's
    assert np.prod(on.event.GetSize()) > np.prod(off.event.GetSize())
    # both visits share the choice; the share is honoured over many patients
    draws = np.array([head_rng(7, i).random() for i in range(400)])
    for share in (0.0, 0.3, 0.5, 1.0):
        assert abs(np.mean(draws < share) - share) < 0.07
    again = simulate_case(1, 11, SimConfig(voxel_scale=2.0, skull_on_share=1.0))
    assert np.array_equal(_arr(again.event), _arr(on.event))
    assert np.array_equal(_arr(again.brain_mask), _arr(on.brain_mask))


def test_poses_cover_the_clinic_range_and_stay_within_it():
    for difficulty in ("easy", "standard", "hard"):
        max_deg, max_mm = POSE_FROM_TEMPLATE[difficulty]
        step_deg, step_mm = POSE_LIMITS[difficulty]
        angles, shifts = [], []
        for i in range(300):
            (r_post, t_post), (r_event, t_event) = visit_poses(case_rng(5, i), difficulty)
            for r, t in ((r_post, t_post), (r_event, t_event)):
                angles.append(angle_deg(r))
                shifts.append(float(np.linalg.norm(t)))
            assert angle_deg(r_post @ r_event.T) <= step_deg + 1e-6
            assert np.linalg.norm(t_post - t_event) <= step_mm + 1e-6
        assert max(angles) <= max_deg + 1e-6 and max(shifts) <= max_mm + 1e-6
        assert max(angles) > 0.85 * max_deg and max(shifts) > 0.85 * max_mm  # the range is used
    assert POSE_FROM_TEMPLATE["standard"] == (15.0, 20.0)


def test_truth_poses_lie_within_the_clinic_range(case, skull_on_pair):
    max_deg, max_mm = POSE_FROM_TEMPLATE["standard"]
    for c in (case, *skull_on_pair):
        for scan in ("post_op_scan", "event_scan"):
            t = c.truth[scan]
            assert t["pose_rotation_deg"] <= max_deg
            assert np.linalg.norm(t["pose_translation_mm"]) <= max_mm + 1e-3


@pytest.mark.slow
def test_a_real_brain_extraction_finds_the_brain_in_skull_on_scans(skull_on_pair):
    """deepbet (geometry/brain.py, ONNX) on a simulated skull-on scan: the head must look real."""
    from ricecli.geometry import brain, stripped

    on, off = skull_on_pair
    found = _arr(brain.extract_brain(on.event)) > 0
    truth = _arr(on.brain_mask) > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.9  # measured 0.945
    assert not stripped.looks_skull_stripped(on.event) and stripped.looks_skull_stripped(off.event)

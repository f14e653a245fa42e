"""The enhancing lesion in model space: found from the prepared channels (new enhancement, not a
bias-field drift), given as a mask on an oblique event grid, and the map's share on it."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.errors import InputError
from ricecli.explain.lesion import (
    Lesion,
    centre_mm,
    find_lesion,
    lesion_from_mask,
    map_on_lesion,
    top_voxels,
)
from ricecli.prepare import PreparedCase

SHAPE = (40, 48, 40)  # z, y, x at 3 mm: the edge preset's spacing, a smaller box
LESION_ZYX = (22, 20, 26)


def _reference() -> sitk.Image:
    ref = sitk.Image(SHAPE[::-1], sitk.sitkFloat32)
    ref.SetSpacing((3.0, 3.0, 3.0))
    ref.SetOrigin((-60.0, -70.0, -60.0))
    return ref


def _ball(centre_zyx: tuple[int, int, int], radius_vox: float) -> np.ndarray:
    zyx = np.indices(SHAPE)
    return ((zyx - np.reshape(centre_zyx, (3, 1, 1, 1))) ** 2).sum(0) <= radius_vox**2


def _case(model_to_event: sitk.Transform | None = None) -> PreparedCase:
    """z-scored post-op and event channels: noise, an event-only bias drift along x (a broad
    ramp, not a lesion) and a bright 9 mm ball of new enhancement."""
    rng = np.random.default_rng(0)
    brain = np.zeros(SHAPE, bool)
    zyx = np.indices(SHAPE)
    brain[(((zyx - np.reshape([20, 24, 20], (3, 1, 1, 1))) / np.reshape([17, 21, 17],
                                                                      (3, 1, 1, 1))) ** 2
           ).sum(0) <= 1] = True
    post_op = rng.normal(0, 1, SHAPE).astype(np.float32) * 0.4
    ramp = np.linspace(-1.5, 1.5, SHAPE[2])[None, None, :]  # event 3 SD brighter on the right
    event = (post_op + rng.normal(0, 1, SHAPE) * 0.3 + ramp).astype(np.float32)
    event[_ball(LESION_ZYX, 3)] += 3.0
    return PreparedCase(channels={"post_op": post_op * brain, "event": event * brain,
                                  "dose": np.zeros(SHAPE, np.float32)},
                        brain_mask=brain.astype(np.uint8), reference=_reference(),
                        event_image=_reference(),
                        model_to_event=model_to_event or sitk.Euler3DTransform())


def test_finds_the_new_enhancement_not_the_drift():
    case = _case()
    found = find_lesion(case)
    truth = _ball(LESION_ZYX, 3)
    dice = 2 * (found.mask & truth).sum() / (found.mask.sum() + truth.sum())
    assert found.source == "found" and dice > 0.6, dice
    assert centre_mm(found, case) == pytest.approx(
        case.reference.TransformIndexToPhysicalPoint(LESION_ZYX[::-1]), abs=3.0)


def test_no_new_enhancement_finds_nothing():
    case = _case()
    case.channels["event"] = case.channels["post_op"].copy()
    assert find_lesion(case).empty


def test_a_mask_on_an_oblique_event_grid_lands_on_the_same_model_voxels():
    move = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.25, (8.0, -5.0, 4.0))
    case = _case(move)
    truth = _ball(LESION_ZYX, 3)
    event_grid = sitk.Image([70, 70, 60], sitk.sitkUInt8)  # oblique 2 mm event grid
    event_grid.SetSpacing((2.0, 2.0, 2.0))
    rot = np.reshape(sitk.Euler3DTransform((0, 0, 0), -0.2, 0.1, 0.3).GetMatrix(), (3, 3))
    event_grid.SetDirection(rot.ravel().tolist())
    event_grid.SetOrigin((-rot @ np.array([69.0, 69.0, 59.0])).tolist())
    truth_img = sitk.GetImageFromArray(truth.astype(np.uint8))
    truth_img.CopyInformation(case.reference)
    # the mask as drawn on the event scan: model space -> event world is `move`
    on_event = sitk.Resample(truth_img, event_grid, move.GetInverse(), sitk.sitkNearestNeighbor,
                             0, sitk.sitkUInt8)
    got = lesion_from_mask(on_event, "lesion.nii.gz", case)
    dice = 2 * (got.mask & truth).sum() / (got.mask.sum() + truth.sum())
    assert dice > 0.8 and got.source == "lesion.nii.gz"
    far = sitk.Image([5, 5, 5], sitk.sitkUInt8) + 1  # a mask 1 m away: refused, file named
    far.SetOrigin((1000.0, 1000.0, 1000.0))
    with pytest.raises(InputError, match="lesion.nii.gz"):
        lesion_from_mask(far, "lesion.nii.gz", case)


def test_map_on_lesion_reports_inside_vs_elsewhere():
    brain = np.ones(SHAPE, bool)
    lesion = Lesion(_ball(LESION_ZYX, 3), "found")
    delta_p = np.zeros(SHAPE, np.float32)
    delta_p[lesion.mask] = 0.1
    delta_p[:4] = -0.02  # a weaker band elsewhere, arguing against the target
    on = map_on_lesion(delta_p, lesion, brain)
    assert on["lesion"] == {"voxels": int(lesion.mask.sum()), "mean_delta_p": 0.1,
                            "max_abs_delta_p": 0.1}
    assert on["elsewhere"]["max_abs_delta_p"] == pytest.approx(0.02)
    # the top 5 % by |delta p|: every lesion voxel plus the tied band
    top = top_voxels(delta_p, brain)
    assert top[lesion.mask].all()
    assert on["top_touches_lesion"] and on["top_fraction_in_lesion"] == pytest.approx(
        lesion.mask.sum() / top.sum(), abs=1e-4)
    assert not top_voxels(np.zeros(SHAPE), brain).any()  # an all-zero map has no top

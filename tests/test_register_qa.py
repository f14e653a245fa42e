"""Registration QA: a wrong transform or brains left apart are flagged, a right one is not."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.geometry.register_qa import registration_qa
from ricecli.geometry.resample import working_image
from ricecli.geometry.template import load_template


@pytest.fixture(scope="module")
def template_2mm():
    t = load_template()
    return working_image(t.t1 * 1000.0), working_image(sitk.Cast(t.mask, sitk.sitkFloat32)) > 0.5


def test_qa_flags_a_wrong_transform(template_2mm):
    volume, _ = template_2mm
    good = sitk.Euler3DTransform()
    good.SetCenter((0.0, 17.0, 7.0))
    region = sitk.Cast(volume > 200, sitk.sitkUInt8)
    ok = registration_qa(volume, volume, good, good, region, same_contrast=True)
    assert not ok["likely_failed"] and ok["ncc"] > 0.99
    bad = sitk.Euler3DTransform(good)
    bad.SetRotation(0.0, 0.0, np.radians(60))  # beyond LIMITS.max_rotation_deg (50)
    bad.SetTranslation((0.0, 50.0, 0.0))
    flagged = registration_qa(volume, volume, bad, good, region, same_contrast=True)
    assert flagged["likely_failed"]
    assert any("rotation" in r for r in flagged["reasons"])
    assert any("moved" in r for r in flagged["reasons"])


def test_qa_flags_brains_that_do_not_overlap(template_2mm):
    """With the moving brain given, a registration that leaves the brains apart is flagged."""
    volume, mask = template_2mm
    region = sitk.Cast(mask, sitk.sitkUInt8)
    good = sitk.Euler3DTransform()
    good.SetCenter((0.0, 17.0, 7.0))
    ok = registration_qa(volume, volume, good, good, region, False, moving_region=region)
    assert ok["brain_dice"] > 0.99 and not ok["likely_failed"]
    off = sitk.Euler3DTransform(good)
    off.SetTranslation((0.0, 0.0, 30.0))  # 30 mm: within the shift limit, brains half apart
    flagged = registration_qa(volume, volume, off, off, region, False, moving_region=region)
    assert flagged["brain_dice"] < 0.8 and flagged["likely_failed"]
    assert any("overlap" in r for r in flagged["reasons"])

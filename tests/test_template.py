"""The shipped template and the model-space grid built on it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ricecli.geometry.resample import template_soft_mask
from ricecli.geometry.template import load_template, model_space_grid
from ricecli.spec import PRESETS


def test_template_is_cached_float_unit_range_and_masked():
    t = load_template()
    assert load_template() is t
    for img in (t.t1, t.gm, t.wm):
        a = sitk.GetArrayViewFromImage(img)
        assert img.GetPixelID() == sitk.sitkFloat32 and a.min() >= 0 and a.max() <= 1
    mask = sitk.GetArrayViewFromImage(t.mask)
    assert t.mask.GetPixelID() == sitk.sitkUInt8
    assert 1.4e6 < mask.sum() < 2.2e6  # an adult brain, ~1.5-2 litres at 1 mm
    assert sitk.GetArrayViewFromImage(t.t1)[mask == 0].max() <= 0.2


def test_model_space_grid_matches_spec_and_holds_the_brain():
    space = PRESETS["edge"].model_space
    g = model_space_grid(space)
    assert g.GetSize() == space.size_xyz and g.GetSpacing() == space.spacing_mm
    assert np.allclose(g.GetOrigin(), space.origin_mm)
    assert np.allclose(g.GetDirection(), np.eye(3).ravel())
    centre = g.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in space.size_xyz])
    assert np.allclose(centre, space.center_mm)
    m = template_soft_mask(g) >= 0.5  # the brain that prepare keeps
    assert m.shape == space.shape_zyx and m.sum() * 27 > 1.4e6
    assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, :, 0].any())

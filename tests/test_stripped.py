"""The skull-stripped detector: stripped scans (a brain on exact zeros) told from skull-on ones."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from head_fixtures import TCGA, make_image, moved, rigid_motion, synthetic_head

from ricecli.geometry.stripped import looks_skull_stripped, skull_stripped_evidence


@pytest.mark.parametrize(("skull_on", "noisy_air", "expected"), [
    (False, False, True),  # a brain alone on exact zeros: skull-stripped
    (True, True, False),  # head with scalp, skull and noisy air
    (True, False, False),  # head with scalp on exact-zero air (noise-free simulation)
    (False, True, False),  # brain-like object in noisy air: not a stripped scan
])
def test_looks_skull_stripped_on_synthetic_heads(skull_on, noisy_air, expected):
    assert looks_skull_stripped(synthetic_head(skull_on, noisy_air)) is expected


def test_skull_on_head_on_a_zero_padded_grid_is_not_stripped():
    """Resampling pads with exact zeros: the noisy air inside the old field of view still counts."""
    head = synthetic_head(True, True, shape=(36, 40, 40))
    posed = moved(head, rigid_motion(head, 10.0, (6.0, -6.0, 3.0)))
    e = skull_stripped_evidence(posed)
    assert e["border_constant_share"] > 0.9 and not looks_skull_stripped(posed)


def test_looks_skull_stripped_on_an_empty_image():
    assert looks_skull_stripped(make_image(np.zeros((8, 8, 8)))) is False


def test_looks_skull_stripped_on_real_scans(shared_data):
    mri = shared_data / "mri"
    for path in sorted(mri.glob("BraTS-*/*.nii.gz")):
        assert looks_skull_stripped(sitk.ReadImage(str(path))), path.name
    ref = sitk.ReadImage(str(shared_data / TCGA / "TCGA-FG-6692_t1c_brainmask.nii.gz"))
    for kind in ("t1", "t1c"):
        scan = sitk.ReadImage(str(shared_data / TCGA / f"TCGA-FG-6692_{kind}.nii.gz"))
        assert not looks_skull_stripped(scan), kind
        posed = moved(scan, rigid_motion(scan, 10.0, (10.0, -10.0, 5.0)))
        assert not looks_skull_stripped(posed), f"{kind} posed"
        stripped = sitk.Mask(scan, sitk.Cast(ref > 0, sitk.sitkUInt8))
        assert looks_skull_stripped(stripped), f"{kind} with its brain mask applied"

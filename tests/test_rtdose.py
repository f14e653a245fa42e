"""DICOM RTDOSE reading: grid geometry by the standard, on real headers and pydicom's files."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from ricecli.io.rtdose import read_rtdose, rtdose_geometry

ORIENTATIONS = ["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"]


@pytest.mark.parametrize("position", ORIENTATIONS)
def test_eight_patient_positions_match_expected_world_coordinates(shared_data, position):
    folder = shared_data / "rtdose/orientation"
    expected = json.loads((folder / "expected_dicom_patient_coords.json").read_text())[position]
    ds = pydicom.dcmread(folder / f"RD.DICOMORIENT.Dose_{position}.dcm")
    geometry = rtdose_geometry(ds)
    reference = geometry.reference()
    c, r, f = expected["columns"] - 1, expected["rows"] - 1, expected["frames"] - 1
    assert reference.GetSize() == (c + 1, r + 1, f + 1)
    points = {"first_voxel_mm": (0, 0, 0), "last_column_mm": (c, 0, 0),
              "last_row_mm": (0, r, 0), "last_frame_mm": (0, 0, f)}
    for name, index in points.items():
        np.testing.assert_allclose(reference.TransformIndexToPhysicalPoint(index),
                                   expected[name], atol=1e-3)
    corners = np.array([reference.TransformIndexToPhysicalPoint((a, b, e))
                        for a in (0, c) for b in (0, r) for e in (0, f)])
    np.testing.assert_allclose(corners.min(0), expected["extent_min_mm"], atol=1e-3)
    np.testing.assert_allclose(corners.max(0), expected["extent_max_mm"], atol=1e-3)


@pytest.mark.parametrize("name", ["rtdose_1frame.dcm", "rtdose_rle.dcm", "rtdose_rle_1frame.dcm",
                                  "rtdose_expb.dcm", "rtdose_expb_1frame.dcm"])
def test_pydicom_variants_agree_with_the_plain_file(name):
    plain, _ = read_rtdose(get_testdata_file("rtdose.dcm"))
    got, ds = read_rtdose(get_testdata_file(name))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    assert got.GetSize() == (10, 10, frames)
    assert got.GetOrigin() == pytest.approx(plain.GetOrigin())
    assert got.GetSpacing() == pytest.approx(plain.GetSpacing())
    want = sitk.GetArrayFromImage(plain)[:frames]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), want)
    assert want.max() == pytest.approx(1.254, abs=1e-6)

"""ricecli.cohort.rtlink: the plan dose, partial doses, the dose frame and the REG direction."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ricecli.cohort.index import read_entry
from ricecli.cohort.rtlink import (
    REG_SOP_CLASS,
    DoseChoice,
    Refusal,
    choose_dose,
    reg_transform,
    write_transform,
)
from ricecli.prepare import read_frame_transform

MR, CT = "1.2.826.0.1.1", "1.2.826.0.1.2"  # frames of reference
GRID = {"ImagePositionPatient": ["0", "0", "0"], "Rows": "10", "Columns": "10",
        "DoseUnits": "GY", "FrameOfReferenceUID": "1.9", "StudyInstanceUID": "1.2"}


def dose(path: str, summation: str, plan: str = "1.5", **facts: object) -> dict:
    return {"path": path, "facts": {"Modality": "RTDOSE", "DoseSummationType": summation,
                                    "ref_plans": [plan], **GRID, **facts}}


def test_plan_dose_preferred_over_beam_doses():
    got = choose_dose([dose("b1", "BEAM"), dose("plan", "PLAN"), dose("b2", "BEAM")])
    assert isinstance(got, DoseChoice) and got.files == ("plan",) and got.summation == "PLAN"
    assert sorted((p, c) for p, c, _ in got.rejected) == [("b1", "beam_dose"),
                                                         ("b2", "beam_dose")]


def test_partial_doses_summed_or_refused_with_the_reason():
    got = choose_dose([dose("b1", "BEAM"), dose("b2", "BEAM")])
    assert isinstance(got, DoseChoice) and got.files == ("b1", "b2") and got.fractions == 1
    moved = dose("b2", "BEAM", ImagePositionPatient=["0", "0", "5"])
    refused = choose_dose([dose("b1", "BEAM"), moved])
    assert isinstance(refused, Refusal) and refused.code == "beam_dose_unsummable"
    assert "different grids" in refused.reason and len(refused.rejected) == 2
    other_plan = choose_dose([dose("b1", "BEAM"), dose("b2", "BEAM", plan="1.6")])
    assert isinstance(other_plan, Refusal) and "one RTPLAN" in other_plan.reason
    plan = {"path": "rp", "facts": {"Modality": "RTPLAN", "SOPInstanceUID": "1.5",
                                    "fractions": ["30"]}}
    fraction = choose_dose([dose("f", "FRACTION"), plan])
    assert isinstance(fraction, DoseChoice) and fraction.fractions == 30
    assert isinstance(choose_dose([plan]), Refusal) and choose_dose([plan]).code == "no_dose"


def write_reg(path, own_frame: str, moving_frame: str, matrix: np.ndarray) -> str:
    """A Spatial Registration object: identity for its own frame, `matrix` for the moving one."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = REG_SOP_CLASS
    ds.SOPClassUID, ds.SOPInstanceUID = REG_SOP_CLASS, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.PatientID = "REG", "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2", generate_uid()
    ds.FrameOfReferenceUID = own_frame
    items = []
    for frame, m in ((own_frame, np.eye(4)), (moving_frame, matrix)):
        mat = Dataset()
        mat.FrameOfReferenceTransformationMatrixType = "RIGID"
        mat.FrameOfReferenceTransformationMatrix = [f"{v:.10g}" for v in m.ravel()]
        reg = Dataset()
        reg.MatrixSequence = Sequence([mat])
        item = Dataset()
        item.FrameOfReferenceUID = frame
        item.MatrixRegistrationSequence = Sequence([reg])
        items.append(item)
    ds.RegistrationSequence = Sequence(items)
    ds.save_as(path, enforce_file_format=True)
    return path.name


def rigid(angles_deg, shift) -> np.ndarray:
    t = sitk.Euler3DTransform()
    t.SetRotation(*np.radians(angles_deg))
    t.SetTranslation(shift)
    m = np.eye(4)
    m[:3, :3] = np.asarray(t.GetMatrix()).reshape(3, 3)
    m[:3, 3] = shift
    return m


def _corr(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayFromImage(a).ravel(), sitk.GetArrayFromImage(b).ravel()
    keep = (x > 0) & (y > 0)
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def test_reg_matrix_direction_on_a_real_volume(tmp_path, shared_data):
    """A REG says CT points x map to MR points M x. The cohort's .tfm, read by prepare, must map
    MR points to CT points (ITK's resampling direction): resampling the CT-frame copy of a real
    brain with it gives the brain back; the matrix itself (the wrong direction) does not."""
    brain = shared_data / "mri/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"
    mr = sitk.ReadImage(str(brain), sitk.sitkFloat32)
    mr = sitk.SmoothingRecursiveGaussian(mr, 2.0)  # two resamplings at 3 mm: keep them faithful
    mr = sitk.Resample(mr, [80, 80, 52], sitk.Transform(), sitk.sitkLinear, mr.GetOrigin(),
                       [3.0, 3.0, 3.0], mr.GetDirection())
    ct_to_mr = rigid((4, -3, 9), (7.0, -5.0, 4.0))
    as_affine = sitk.AffineTransform(3)
    as_affine.SetMatrix(ct_to_mr[:3, :3].ravel().tolist())
    as_affine.SetTranslation(ct_to_mr[:3, 3].tolist())
    ct = sitk.Resample(mr, mr, as_affine, sitk.sitkLinear)  # ct(x) = mr(M x)

    for own, moving, m in ((MR, CT, ct_to_mr), (CT, MR, np.linalg.inv(ct_to_mr))):
        name = write_reg(tmp_path / f"reg_{own}.dcm", own, moving, m)
        entry = read_entry(str(tmp_path), name)
        matrix, why = reg_transform([entry], post_frame=MR, dose_frame=CT)
        assert matrix is not None and "rigid" in why
        write_transform(matrix, tmp_path / "t.tfm")
        given = read_frame_transform(tmp_path / "t.tfm")
        np.testing.assert_allclose(given, np.linalg.inv(ct_to_mr), atol=1e-6)
        back = sitk.Resample(ct, mr, sitk.ReadTransform(str(tmp_path / "t.tfm")),
                             sitk.sitkLinear)
        assert _corr(back, mr) > 0.99
    wrong = sitk.Resample(ct, mr, as_affine, sitk.sitkLinear)
    assert _corr(wrong, mr) < 0.8
    assert reg_transform([entry], post_frame=MR, dose_frame="1.2.3")[0] is None


def test_non_rigid_reg_is_not_used(tmp_path):
    scaled = np.diag([1.1, 1.0, 1.0, 1.0])
    entry = read_entry(str(tmp_path), write_reg(tmp_path / "r.dcm", MR, CT, scaled))
    matrix, why = reg_transform([entry], MR, CT)
    assert matrix is None and "not a rigid" in why


@pytest.mark.parametrize("bad", ["not a transform", ""])
def test_prepare_refuses_a_bad_transform_file(tmp_path, bad):
    from ricecli.errors import InputError

    (tmp_path / "t.tfm").write_text(bad)
    with pytest.raises(InputError):
        read_frame_transform(tmp_path / "t.tfm")


def test_singular_reg_matrix_is_not_used(tmp_path):
    entry = read_entry(str(tmp_path), write_reg(tmp_path / "r.dcm", MR, CT, np.zeros((4, 4))))
    matrix, why = reg_transform([entry], MR, CT)
    assert matrix is None and "singular" in why

"""MR reading: every format lands in the same LPS world geometry; bad inputs are refused."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ricecli.errors import InputError
from ricecli.io.dicom_write import write_mr_series, write_rtdose
from ricecli.io.volume import geometry_summary, read_mask, read_mr, read_scan

OBLIQUE = sitk.VersorTransform((0.3, -0.2, 1.0), 0.35).GetMatrix()
DIRECTIONS = {
    "lps": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "ras": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": OBLIQUE,
    "left_handed": (1, 0, 0, 0, 1, 0, 0, 0, -1),
}


def scan(direction=DIRECTIONS["lps"], shape=(12, 14, 16)) -> sitk.Image:
    """A small scan linear along slices (so linear interpolation between slices is exact)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    image = sitk.GetImageFromArray(100.0 + 10.0 * k + 3.0 * j + i + (i * j % 7))
    image.SetSpacing((0.9, 1.2, 2.5))
    image.SetOrigin((-30.0, 12.5, -40.25))
    image.SetDirection(direction)
    return image


def assert_same_world(got: sitk.Image, want: sitk.Image, atol: float = 0.01) -> None:
    """Same voxels at the same world points, whatever the storage order of either image."""
    corners = [[0, n - 1] for n in want.GetSize()]
    for c in np.array(np.meshgrid(*corners)).reshape(3, -1).T:
        point = want.TransformIndexToPhysicalPoint([int(v) for v in c])
        idx = got.TransformPhysicalPointToContinuousIndex(point)
        assert np.allclose(idx, np.round(idx), atol=1e-3), (point, idx)
    resampled = sitk.Resample(got, want, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(want), atol=atol
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("name", ["lps", "ras", "oblique"])
def test_image_formats_keep_world_geometry(tmp_path, suffix, name):
    image = scan(DIRECTIONS[name])
    path = tmp_path / f"t1c{suffix}"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(path))
    got = read_mr(path)
    assert got.GetPixelID() == sitk.sitkFloat32 and got.GetDimension() == 3
    assert_same_world(got, image, atol=1e-4)


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_dicom_series_keeps_world_geometry(tmp_path, name):
    image = scan(DIRECTIONS[name])
    folder = write_mr_series(image, tmp_path / "series")
    got = read_mr(folder)
    assert_same_world(got, image, atol=0.02)
    normal = np.cross(np.reshape(got.GetDirection(), (3, 3))[:, 0],
                      np.reshape(got.GetDirection(), (3, 3))[:, 1])
    np.testing.assert_allclose(np.reshape(got.GetDirection(), (3, 3))[:, 2], normal, atol=1e-6)


def test_dicom_files_in_any_order_and_one_file_given(tmp_path):
    image = scan(DIRECTIONS["oblique"])
    folder = write_mr_series(image, tmp_path / "series")
    files = sorted(folder.glob("*.dcm"))
    for n, f in enumerate(files):  # names now run against the slice order
        f.rename(folder / f"IM{len(files) - n:03d}")
    notes: list[str] = []
    read = read_scan(folder / "IM005", notes)
    assert_same_world(read.image, image, atol=0.02)
    assert any("whole series" in n for n in notes)
    # the slices' headers (no pixels), in the order they were stacked: for --dicom-out
    assert len(read.series) == image.GetSize()[2]
    for k, ds in enumerate(read.series):
        assert "PixelData" not in ds
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   read.image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-3)


def test_folder_with_several_series_takes_the_largest_and_says_so(tmp_path):
    folder = tmp_path / "study"
    big = scan(DIRECTIONS["ras"])
    write_mr_series(big, folder / "a", series_description="T1c", series_number=3)
    write_mr_series(scan(shape=(5, 14, 16)), folder / "b", series_description="localizer")
    for f in folder.rglob("*.dcm"):
        f.rename(folder / f"{f.parent.name}_{f.name}")
    notes: list[str] = []
    read = read_scan(folder, notes)
    assert read.image.GetSize() == big.GetSize()
    assert_same_world(read.image, big, atol=0.02)
    assert any("2 series" in n and "T1c" in n and "12 slices" in n for n in notes)
    assert [ds.SeriesDescription for ds in read.series] == ["T1c"] * 12


def test_uneven_slices_are_resampled_to_the_median_gap(tmp_path):
    image = scan(DIRECTIONS["oblique"])
    folder = write_mr_series(image, tmp_path / "series")
    for k in (4, 5, 9):  # three missing slices: gaps of 7.5 mm and 5 mm among 2.5 mm
        (folder / f"slice_{k:04d}.dcm").unlink()
    notes: list[str] = []
    got = read_mr(folder, notes)
    assert got.GetSize() == image.GetSize()
    assert got.GetSpacing()[2] == pytest.approx(2.5)
    assert_same_world(got, image, atol=0.02)  # the scan is linear along slices: exact
    assert any("resampled" in n and "2.5 mm" in n for n in notes)


def test_nifti_stored_ras_reads_as_lps_world(shared_data):
    """SimpleITK's LPS geometry equals nibabel's RAS affine with x and y negated."""
    nib = pytest.importorskip("nibabel")
    for path in [
        shared_data / "mri/BraTS-MET-00110-000/BraTS-MET-00110-000-t1c.nii.gz",
        shared_data / "mri/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz",
        shared_data / "mri/TCGA-FG-6692/TCGA-FG-6692_t1c.nii.gz",
    ]:
        image = read_mr(path)
        affine = nib.load(path).affine
        for ijk in [(0, 0, 0), (200, 17, 3), (5, 180, 20)]:
            ras = affine @ np.array([*ijk, 1.0])
            lps = ras[:3] * np.array([-1.0, -1.0, 1.0])
            np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), lps, atol=1e-3)
    met = shared_data / "mri/BraTS-MET-00110-000/BraTS-MET-00110-000-t1c.nii.gz"
    assert geometry_summary(read_mr(met))["axes"] == "RAS"


def test_read_mask_is_binary(tmp_path, shared_data):
    mask = read_mask(shared_data / "mri/TCGA-FG-6692/TCGA-FG-6692_t1c_brainmask.nii.gz")
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    assert mask.GetPixelID() == sitk.sitkUInt8 and set(values.tolist()) == {0, 1}
    labels = sitk.Cast(scan() > 250, sitk.sitkFloat32) * 3.0
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    notes: list[str] = []
    got = read_mask(tmp_path / "labels.nii.gz", notes)
    assert sitk.GetArrayViewFromImage(got).max() == 1 and notes


def test_geometry_summary_is_plain_json(tmp_path):
    summary = geometry_summary(scan(DIRECTIONS["oblique"]))
    assert summary["size"] == [16, 14, 12] and summary["oblique"] is True
    assert summary["spacing_mm"] == [0.9, 1.2, 2.5]
    assert geometry_summary(scan())["axes"] == "LPS"


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_4d_with_one_volume_is_read_as_3d(tmp_path, suffix):
    path = tmp_path / f"one{suffix}"
    sitk.WriteImage(sitk.JoinSeries([scan()]), str(path))
    got = read_mr(path)
    assert got.GetSize() == (16, 14, 12) and got.GetDimension() == 3


# ----------------------------------------------------------------- refusals


def _refused(path, *words):
    with pytest.raises(InputError) as err:
        read_mr(path)
    line = err.value.one_line()
    assert "\n" not in line and str(path) in line and "Fix:" in line
    for word in words:
        assert word in line, line
    return line


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.nii.gz", "not found")


def test_text_file_and_empty_file(tmp_path):
    (tmp_path / "notes.txt").write_text("this is not an image\n")
    _refused(tmp_path / "notes.txt", "not an image")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    _refused(tmp_path / "empty.nii.gz")
    (tmp_path / "fake.nii.gz").write_bytes(gzip.compress(b"hello " * 100))
    _refused(tmp_path / "fake.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"t1c{suffix}"
    sitk.WriteImage(scan(shape=(40, 40, 40)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path)


def test_mhd_without_its_raw_file(tmp_path):
    sitk.WriteImage(scan(), str(tmp_path / "t1c.mhd"))
    (tmp_path / "t1c.raw").unlink()
    _refused(tmp_path / "t1c.mhd", "damaged or truncated")


def test_2d_image_and_single_slice(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(30, dtype=np.float32).reshape(5, 6)),
                    str(tmp_path / "slice.nii.gz"))
    _refused(tmp_path / "slice.nii.gz", "2D")
    sitk.WriteImage(scan(shape=(1, 14, 16)), str(tmp_path / "thin.nii.gz"))
    _refused(tmp_path / "thin.nii.gz", "2D")


def test_4d_and_vector_images(tmp_path):
    sitk.WriteImage(sitk.JoinSeries([scan(), scan()]), str(tmp_path / "dyn.nii.gz"))
    _refused(tmp_path / "dyn.nii.gz", "4D")
    sitk.WriteImage(sitk.Compose([scan(), scan()]), str(tmp_path / "vec.nrrd"))
    _refused(tmp_path / "vec.nrrd", "components")


def test_constant_and_non_finite(tmp_path):
    flat = scan() * 0.0 + 7.0
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    _refused(tmp_path / "flat.nii.gz", "constant")
    values = sitk.GetArrayFromImage(scan())
    for bad, suffix in [(np.nan, ".nii.gz"), (-np.inf, ".nii"), (np.nan, ".nrrd")]:
        broken = values.copy()
        broken[3, 4, 5] = bad
        path = tmp_path / f"broken{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(broken), str(path))
        _refused(path, "NaN")  # ITK itself zeroes NaNs in NIfTI: ricecli must not


def test_rt_objects_are_not_mr(tmp_path, shared_data):
    dose = write_rtdose(scan() * 0.1, tmp_path / "RD.dcm")
    _refused(dose, "RTDOSE", "--dose")
    _refused(shared_data / "rtdose/pinnacle/RP.pinnacle.dcm", "RTPLAN")
    folder = tmp_path / "rt"
    folder.mkdir()
    shutil.copy(dose, folder / "RD.dcm")
    _refused(folder, "no DICOM image series", "RTDOSE")


def test_dicom_folders_that_cannot_make_a_volume(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    _refused(empty, "no DICOM")
    single = write_mr_series(scan(), tmp_path / "single")
    for f in sorted(single.glob("*.dcm"))[1:]:
        f.unlink()
    _refused(single, "single slice")
    echoes = tmp_path / "echoes"
    write_mr_series(scan(), echoes / "a")
    for f in (echoes / "a").glob("*.dcm"):  # a second echo: same series, same positions
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(echoes / "a" / f"echo2_{f.name}")
    _refused(echoes / "a", "same slice position")


def test_damaged_dicom_slice(tmp_path):
    folder = write_mr_series(scan(), tmp_path / "series")
    victim = folder / "slice_0003.dcm"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 100])
    _refused(folder, "slice_0003")


def test_gantry_tilt_is_refused(tmp_path):
    folder = write_mr_series(scan(), tmp_path / "series")
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * (z + 40.25), z]  # sheared stack
        ds.save_as(f)
    _refused(folder, "gantry tilt")


def test_dicom_series_without_preambles(tmp_path):
    image = scan(DIRECTIONS["ras"])
    folder = write_mr_series(image, tmp_path / "series")
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(f.with_suffix(""), implicit_vr=True, little_endian=True,
                   enforce_file_format=False)
        f.unlink()
    assert_same_world(read_mr(folder), image, atol=0.02)


def test_enhanced_multiframe_mr_is_refused_with_a_fix(tmp_path):
    path = write_rtdose(scan() * 0.1, tmp_path / "enhanced.dcm")
    ds = pydicom.dcmread(path)
    ds.Modality, ds.SOPClassUID = "MR", "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR
    ds.save_as(path)
    _refused(path, "multi-frame", "dcm2niix")


# ----------------------------------------------------------------- geometry that would misplace


def _patched_nifti(src, dst, pixdim=None, sform=None):
    """A copy of an uncompressed NIfTI-1 file with pixdim[1:4] or an sform (code 2) patched."""
    import struct

    raw = bytearray(src.read_bytes())
    if pixdim is not None:
        struct.pack_into("<3f", raw, 80, *pixdim)
    if sform is not None:
        struct.pack_into("<h", raw, 252, 0)  # qform_code 0: ITK would use the sform
        struct.pack_into("<h", raw, 254, 2)
        for i, row in enumerate(sform):
            struct.pack_into("<4f", raw, 280 + 16 * i, *row)
    dst.write_bytes(bytes(raw))
    return dst


def test_nifti_pixdim_0_is_not_read_as_1_mm(tmp_path):
    sitk.WriteImage(scan(), str(tmp_path / "ok.nii"))
    bad = _patched_nifti(tmp_path / "ok.nii", tmp_path / "pix0.nii", pixdim=(0.0, 0.0, 0.0))
    _refused(bad, "pixdim", "zero")


def test_singular_sform_says_so(tmp_path):
    sitk.WriteImage(scan(), str(tmp_path / "ok.nii"))
    bad = _patched_nifti(tmp_path / "ok.nii", tmp_path / "sing.nii",
                         sform=[(1, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0)])
    line = _refused(bad, "sform", "singular")
    assert "not an image file" not in line


def test_zero_spacing_mha_says_so(tmp_path):
    sitk.WriteImage(scan(), str(tmp_path / "ok.mha"))
    text = (tmp_path / "ok.mha").read_bytes()
    start = text.index(b"ElementSpacing")
    end = text.index(b"\n", start)
    (tmp_path / "zero.mha").write_bytes(text[:start] + b"ElementSpacing = 0 0 0" + text[end:])
    line = _refused(tmp_path / "zero.mha", "spacing 0x0x0")
    assert "damaged" not in line


def test_single_voxel_is_not_called_2d(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 1, 1), np.float32)),
                    str(tmp_path / "one.nii.gz"))
    line = _refused(tmp_path / "one.nii.gz", "single voxel")
    assert "2D" not in line


def test_dicom_zero_pixel_spacing_is_refused(tmp_path):
    folder = write_mr_series(scan(), tmp_path / "series")
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = ["0", "0"]
        ds.save_as(f)
    _refused(folder, "PixelSpacing", "zero")


def test_a_single_dicom_file_error_names_the_file(tmp_path):
    single = write_mr_series(scan(), tmp_path / "single")
    for f in sorted(single.glob("*.dcm"))[1:]:
        f.unlink()
    given = sorted(single.glob("*.dcm"))[0]
    line = _refused(given, "single slice")
    assert line.startswith(f"{given}: its series in {single}")


def test_dicom_header_facts_reach_the_image(tmp_path):
    from ricecli.io.base import image_facts

    folder = write_mr_series(scan(), tmp_path / "series")
    facts = image_facts(read_mr(folder))
    assert facts["Modality"] == "MR" and facts["PatientID"] == "RICENET-SIM"
    assert facts["StudyDate"] == "20260101" and facts["SeriesInstanceUID"]

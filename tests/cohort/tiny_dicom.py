"""Tiny real DICOM files written with pydicom for the cohort unit tests (a few KB each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR = "1.2.840.10008.5.1.4.1.1.4"
RTDOSE = "1.2.840.10008.5.1.4.1.1.481.2"


def write_slice(path: Path, size: int = 8, **tags: object) -> Path:
    """One MR slice (size x size int16) with `tags` set on top of a minimal header."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = tags.get("SOPClassUID", MR)
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3.1"
    ds.SeriesInstanceUID = "1.2.3.1.1"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing = [1, 1]
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = (np.arange(size * size, dtype="<i2") % 97).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, slices: int = 6, **tags: object) -> list[Path]:
    """`slices` slices 2 mm apart of one series (same tags) in `folder`."""
    uid = str(tags.pop("SeriesInstanceUID", generate_uid()))
    return [write_slice(folder / f"im{k:03d}.dcm", SeriesInstanceUID=uid,
                        ImagePositionPatient=[0, 0, 2 * k], InstanceNumber=k + 1, **tags)
            for k in range(slices)]

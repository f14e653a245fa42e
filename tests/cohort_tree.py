"""Realistic DICOM export trees (Burdenko-like cohorts) in a tmp folder, with the truth of every
choice `ricecli cohort` must make, so that its tests can assert them.

Four patients (see `build_tree`), built from the real sample brains in ../shared/data/mri
resampled to 64x64 slices (the simulator's heads when ../shared is absent). Every UID derives
from the seed, so each layout of one seed holds the same SOP instances.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from ricecli.geometry.resample import affine_matrix
from ricecli.io.dicom_write import write_mr_series, write_rtdose

SKIP_CODES = ("unreadable", "localizer", "derived", "mpr", "subtraction", "precontrast",
              "not_t1c", "no_dose", "beam_dose", "tie")
LAYOUTS = ("nbia", "flat", "one_per_folder")
P1, P2, P3, P4 = (f"Burdenko-GBM-00{i}" for i in range(1, 5))
SHARED_MRI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mri"
RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
REG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # what RTReferencedStudySequence items name
PLAN_PEAK_GY, BEAM_SHARES = 60.0, (0.55, 0.45)  # the plan dose = beam 1 + beam 2

ORIGINAL_MR = ["ORIGINAL", "PRIMARY", "M", "ND"]
MPRAGE = dict(ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"],
              ScanOptions="IR", MRAcquisitionType="3D", RepetitionTime="2300",
              EchoTime="2.98", InversionTime="900", FlipAngle="9")
TFE = dict(ScanningSequence="GR", SequenceVariant=["SP", "MP"], MRAcquisitionType="3D",
           RepetitionTime="8.1", EchoTime="3.7", FlipAngle="8")
SE_T1 = dict(ScanningSequence="SE", SequenceVariant="SP", MRAcquisitionType="2D",
             RepetitionTime="550", EchoTime="10", FlipAngle="90")
TSE_T2 = dict(ScanningSequence="SE", SequenceVariant=["SK", "SP"], MRAcquisitionType="2D",
              RepetitionTime="5000", EchoTime="95", FlipAngle="150")
FLAIR = dict(ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"],
             ScanOptions="IR", MRAcquisitionType="2D", RepetitionTime="9000",
             EchoTime="90", InversionTime="2500", FlipAngle="150")
SCOUT = dict(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D",
             RepetitionTime="8.6", EchoTime="4", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
# kind -> contrast source, slices per series (x, y, z), spacing mm
GEOMETRY = {"3d": ((64, 64, 24), (3.75, 3.75, 6.5)), "2d": ((64, 64, 18), (3.75, 3.75, 8.5)),
            "ct": ((64, 64, 30), (4.0, 4.0, 5.0)), "loc": ((64, 64, 3), (4.0, 4.0, 30.0)),
            "mpr": ((64, 64, 20), (3.75, 3.75, 7.0))}
SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rows A->P, columns S->I


@dataclass(frozen=True)
class PatientTruth:
    patient_id: str
    post_op_series_uid: str | None  # the contrast T1 of the planning study
    event_series_uids: tuple[str, ...]  # the contrast T1 of each later follow-up, by date
    event_dates: tuple[str, ...]  # YYYYMMDD, same order
    dose_sop_uid: str | None  # the RTDOSE to use (PLAN dose) or None
    beam_dose_sop_uids: tuple[str, ...]  # BEAM doses present (summed only if no PLAN dose)
    dose_frame_series_uid: str | None  # planning CT series when dose frame != post_op frame
    reg_matrix: tuple[float, ...] | None  # 16 floats, REG matrix dose frame -> MR frame
    skip_codes: dict[str, str]  # series_uid or file path -> expected code
    no_case_reason: str | None  # code when the patient can form no case (e.g. no_dose)


@dataclass(frozen=True)
class TreeTruth:
    root: Path
    patients: dict[str, PatientTruth]
    broken_files: tuple[Path, ...]  # a truncated DICOM (unreadable), LICENSE.txt (not DICOM)
    n_files: int


@dataclass(frozen=True)
class Head:
    """One patient's anatomy in its planning-MR world (mm), smoothed for down-sampling."""

    t1c: sitk.Image
    t1: sitk.Image
    p99: float  # the brain's 99th percentile on T1: scales the synthetic contrasts
    centre: tuple[float, float, float]  # brain centroid
    tumour: tuple[float, float, float]  # centroid of the brightest enhancing voxels


@lru_cache(maxsize=2)
def load_head(name: str) -> Head:
    """'gli' or 'met': a BraTS case from ../shared/data, else a simulated head."""
    folder = {"gli": "BraTS-GLI-00001-000", "met": "BraTS-MET-00110-000"}[name]
    pre = "t1n" if name == "gli" else "t1"
    if (SHARED_MRI / folder).is_dir():
        t1c, t1 = (sitk.ReadImage(str(SHARED_MRI / folder / f"{folder}-{s}.nii.gz"),
                                  sitk.sitkFloat32) for s in ("t1c", pre))
    else:  # the tests must not need ../shared: the simulator's post-op T1c and a "native" T1
        from ricecli.simulate import SimConfig, simulate_case

        config = SimConfig(work_mm=3.0, skull_on_share=0.0)  # ~1 s a head
        t1c = sitk.Cast(simulate_case(0 if name == "gli" else 1, 0, config).post_op,
                        sitk.sitkFloat32)
        arr = sitk.GetArrayFromImage(t1c)
        t1 = sitk.GetImageFromArray(np.minimum(arr, np.percentile(arr, 97)))
        t1.CopyInformation(t1c)
    # ~2 mm (block means), then smoothed: the series sample it at 3.75-8.5 mm
    shrink = [max(1, round(2.0 / s)) for s in t1c.GetSpacing()]
    t1c, t1 = (sitk.SmoothingRecursiveGaussian(sitk.BinShrink(im, shrink), 1.5)
               for im in (t1c, t1))
    arr, arr_c = sitk.GetArrayFromImage(t1), sitk.GetArrayFromImage(t1c)
    brain = arr > 0.05 * np.percentile(arr, 99.5)
    bright = brain & (arr_c >= np.percentile(arr_c[brain], 99.7))

    def centroid(mask: np.ndarray) -> tuple[float, float, float]:
        zyx = np.argwhere(mask).mean(axis=0)
        return tuple(t1.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist()))

    return Head(t1c, t1, float(np.percentile(arr[brain], 99)), centroid(brain), centroid(bright))


def pose(head: Head, angles_deg: Sequence[float] = (0, 0, 0),
         shift_mm: Sequence[float] = (0, 0, 0)) -> sitk.Euler3DTransform:
    """A scanner frame: maps its coordinates to the planning-MR world (rotation about the brain)."""
    t = sitk.Euler3DTransform()
    t.SetCenter(head.centre)
    t.SetRotation(*np.deg2rad(angles_deg).tolist())
    t.SetTranslation([float(v) for v in shift_mm])
    return t


def scan(head: Head, kind: str, geometry: str, frame: sitk.Euler3DTransform) -> sitk.Image:
    """One series' volume: the head seen in `frame` on a `geometry` grid, in `kind` contrast
    (t1, t1c, sub, t2, flair: synthesised from the T1; ct: Hounsfield-like)."""
    size, spacing = GEOMETRY[geometry]
    direction = np.reshape(SAGITTAL if geometry == "mpr" else np.eye(3).ravel(), (3, 3))
    grid = sitk.Image(list(size), sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(direction.ravel().tolist())
    centre = np.asarray(frame.GetInverse().TransformPoint(head.centre))
    grid.SetOrigin((centre - direction @ ((np.asarray(size) - 1) / 2 * spacing)).tolist())
    image = sitk.Resample(head.t1, grid, frame, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    t1 = sitk.GetArrayFromImage(image)
    brain, p99 = t1 > 0.05 * head.p99, head.p99
    if kind in ("t1c", "sub"):  # a subtraction: post- minus pre-contrast
        t1c = sitk.Resample(head.t1c, grid, frame, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        t1 = sitk.GetArrayFromImage(t1c) - (t1 if kind == "sub" else 0.0)
    elif kind == "t2":
        t1 = np.where(brain, 1.15 * p99 - t1, 0.0)
    elif kind == "flair":
        t1 = np.where(brain, (1.15 * p99 - t1) * np.where(t1 < 0.35 * p99, 0.25, 1.0), 0.0)
    elif kind == "ct":  # Hounsfield-like: brain 20-40, a bone shell 3-9 mm outside it, air
        outside = ndimage.distance_transform_edt(~brain, sampling=spacing[::-1])
        t1 = np.where(brain, 20 + 20 * t1 / p99, np.where(outside < 9, 1100.0, -1000.0))
        t1[(outside > 0) & (outside < 3)] = 30.0
    out = sitk.GetImageFromArray(np.round(np.maximum(t1, -1000.0)).astype(np.float32))
    out.CopyInformation(image)
    return out


def plan_dose(head: Head, frame: sitk.Euler3DTransform, share: float = 1.0) -> sitk.Image:
    """`share` of a 60 Gy peak on the tumour (Gaussian falloff, 0.5 Gy floor), on a 4 mm grid
    of 200 x 200 x 160 mm around the brain, in `frame` coordinates."""
    size = np.array([50, 50, 40])
    origin = np.asarray(frame.GetInverse().TransformPoint(head.centre)) - (size - 1) / 2 * 4.0
    x, y, z = (origin[i] + 4.0 * np.arange(size[i]) for i in range(3))
    tx, ty, tz = frame.GetInverse().TransformPoint(head.tumour)
    d2 = (z[:, None, None] - tz) ** 2 + (y[None, :, None] - ty) ** 2 + (x[None, None] - tx) ** 2
    values = share * (PLAN_PEAK_GY * np.exp(-d2 / (2 * 22.0**2)) + 0.5)
    dose = sitk.GetImageFromArray(values.astype(np.float32))
    dose.SetSpacing((4.0, 4.0, 4.0))
    dose.SetOrigin(origin.tolist())
    return dose


@dataclass(frozen=True)
class Study:
    patient_id: str
    sex: str
    uid: str
    date: str  # YYYYMMDD
    description: str
    head: Head

    def tags(self) -> dict[str, Any]:
        return dict(PatientID=self.patient_id, PatientName=f"{self.patient_id}^",
                    PatientSex=self.sex, PatientBirthDate="", StudyDate=self.date,
                    StudyTime="101500", StudyDescription=self.description, StudyID="1",
                    AccessionNumber="", BodyPartExamined="HEAD", Manufacturer="SIEMENS")


@dataclass
class Patient:
    """A patient's truth while its files are written (frozen into PatientTruth at the end)."""

    patient_id: str
    post_op: str | None = None
    events: list[tuple[str, str]] = field(default_factory=list)  # (date, series uid)
    dose: str | None = None
    beams: list[str] = field(default_factory=list)
    dose_frame: str | None = None
    reg: tuple[float, ...] | None = None
    skip: dict[str, str] = field(default_factory=dict)
    no_case: str | None = None

    def truth(self) -> PatientTruth:
        events = sorted(self.events)
        return PatientTruth(self.patient_id, self.post_op, tuple(u for _, u in events),
                            tuple(d for d, _ in events), self.dose, tuple(self.beams),
                            self.dose_frame, self.reg, dict(self.skip), self.no_case)


def item(**tags: Any) -> Dataset:
    """A sequence item from keyword=value pairs."""
    ds = Dataset()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _clean(text: str) -> str:
    return re.sub(r"[^\w\-+ .]", "_", text)


def _digits(text: str) -> int:
    """A stable 5-digit number for a name (NBIA folder suffixes)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 99991


class Export:
    """Writes the tree's files in one layout; keeps the list of files and of each series."""

    def __init__(self, root: Path, layout: str, seed: int) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        self.root, self.layout, self.seed = root, layout, seed
        self.files: list[Path] = []
        self.series_files: dict[str, list[Path]] = {}
        self.broken: list[Path] = []

    def uid(self, *parts: str) -> str:
        return generate_uid(entropy_srcs=["ricenet-cohort-tree", str(self.seed), *parts])

    def place(self, key: str, index: int, nbia: Path) -> Path:
        """Where file `index` of series `key` goes: `nbia` in that layout, else opaque names."""
        h = hashlib.sha1(f"{self.seed}/{key}/{index}".encode()).hexdigest()
        path = {"nbia": nbia, "flat": self.root / h[:12].upper(),
                "one_per_folder": self.root / h[:8] / f"{h[8:20]}.dcm"}[self.layout]
        if path.exists():
            raise RuntimeError(f"{path} written twice")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(path)
        return path

    def nbia_folder(self, study: Study, number: int, description: str, key: str) -> Path:
        y, m, d = study.date[:4], study.date[4:6], study.date[6:]
        return (self.root / study.patient_id
                / f"{m}-{d}-{y}-NA-{_clean(study.description)}-{_digits(study.uid)}"
                / f"{number}.000000-{_clean(description)}-{_digits(key)}")

    def images(self, study: Study, number: int, description: str, image: sitk.Image,
               frame_uid: str, tags: dict[str, Any], modality: str = "MR") -> str:
        """One image series (one file per slice); returns its SeriesInstanceUID."""
        series_uid = self.uid(study.uid, str(number), description)
        headers = {**study.tags(), "SeriesDate": study.date, "SeriesTime": "102000",
                   "AcquisitionDate": study.date, "ContentDate": study.date,
                   "ProtocolName": description, "PatientPosition": "HFS",
                   "ImageType": ORIGINAL_MR, **tags}
        staging = self.root / f".staging-{series_uid}"
        write_mr_series(image, staging, description, number, modality, study.uid, frame_uid,
                        series_uid, {k: v for k, v in headers.items() if v is not None})
        folder = self.nbia_folder(study, number, description, series_uid)
        paths = []
        for k, src in enumerate(sorted(staging.iterdir())):
            paths.append(src.replace(self.place(series_uid, k, folder / f"1-{k + 1:02d}.dcm")))
        staging.rmdir()
        self.series_files[series_uid] = paths
        return series_uid

    def instances(self, series_uid: str) -> list[Dataset]:
        return [pydicom.dcmread(p, stop_before_pixels=True) for p in self.series_files[series_uid]]

    def save(self, ds: Dataset, study: Study) -> str:
        """Write one RT object (its own series); returns its SOPInstanceUID."""
        nbia = self.nbia_folder(study, int(ds.SeriesNumber), str(ds.SeriesDescription),
                                ds.SeriesInstanceUID) / "1-1.dcm"
        ds.save_as(self.place(ds.SOPInstanceUID, 0, nbia), enforce_file_format=True)
        return str(ds.SOPInstanceUID)


def mr(ex: Export, pt: Patient, study: Study, number: int, description: str, kind: str,
       geometry: str, frame: tuple[sitk.Euler3DTransform, str], role: str | None,
       **tags: Any) -> str:
    """Write one MR (or CT) series and record its `role` (post_op, event, dose_frame, a skip
    code, or None) in the patient's truth."""
    modality = "CT" if kind == "ct" else "MR"
    uid = ex.images(study, number, description, scan(study.head, kind, geometry, frame[0]),
                    frame[1], tags, modality)
    if role == "post_op":
        pt.post_op = uid
    elif role == "event":
        pt.events.append((study.date, uid))
    elif role == "dose_frame":
        pt.dose_frame = uid
    elif role is not None:
        assert role in SKIP_CODES, role
        pt.skip[uid] = role
    return uid


def rt_object(ex: Export, study: Study, sop_class: str, modality: str, number: int,
              description: str) -> Dataset:
    """Patient, study, series and SOP modules of an RT object (RTSTRUCT, RTPLAN, REG)."""
    ds = item(SpecificCharacterSet="ISO_IR 100", SOPClassUID=sop_class,
              SOPInstanceUID=ex.uid(study.uid, description), Modality=modality, **study.tags(),
              StudyInstanceUID=study.uid, SeriesInstanceUID=ex.uid(study.uid, description, "s"),
              SeriesNumber=number, SeriesDescription=description, InstanceNumber=1,
              SeriesDate=study.date, ContentDate=study.date, ContentTime="110000",
              InstanceCreationDate=study.date, ReferringPhysicianName="", OperatorsName="")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    return ds


def rtstruct(ex: Export, study: Study, number: int, image_series: str, frame: tuple[
        sitk.Euler3DTransform, str]) -> str:
    """A structure set on `image_series` with one GTV contour (a square around the tumour)."""
    ds = rt_object(ex, study, RTSTRUCT_STORAGE, "RTSTRUCT", number, "RTSTRUCT")
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "GTV", study.date, "110000"
    slices = ex.instances(image_series)
    refs = [item(ReferencedSOPClassUID=s.SOPClassUID, ReferencedSOPInstanceUID=s.SOPInstanceUID)
            for s in slices]
    ds.ReferencedFrameOfReferenceSequence = [item(
        FrameOfReferenceUID=frame[1], RTReferencedStudySequence=[item(
            ReferencedSOPClassUID=STUDY_COMPONENT, ReferencedSOPInstanceUID=study.uid,
            RTReferencedSeriesSequence=[item(SeriesInstanceUID=image_series,
                                             ContourImageSequence=refs)])])]
    ds.StructureSetROISequence = [item(ROINumber=1, ReferencedFrameOfReferenceUID=frame[1],
                                       ROIName="GTV", ROIGenerationAlgorithm="MANUAL")]
    x, y, z = frame[0].GetInverse().TransformPoint(study.head.tumour)
    k = int(np.argmin([abs(float(s.ImagePositionPatient[2]) - z) for s in slices]))
    z = float(slices[k].ImagePositionPatient[2])
    square = [v for dx, dy in ((-10, -10), (10, -10), (10, 10), (-10, 10))
              for v in (f"{x + dx:.2f}", f"{y + dy:.2f}", f"{z:.2f}")]
    contour = item(ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=4,
                   ContourData=square, ContourImageSequence=[refs[k]])
    ds.ROIContourSequence = [item(ReferencedROINumber=1, ROIDisplayColor=[255, 0, 0],
                                  ContourSequence=[contour])]
    ds.RTROIObservationsSequence = [item(ObservationNumber=1, ReferencedROINumber=1,
                                         RTROIInterpretedType="GTV", ROIInterpreter="")]
    return ex.save(ds, study)


def rtplan(ex: Export, study: Study, number: int, frame_uid: str, struct_sop: str) -> str:
    """A 2-beam, 30-fraction, 60 Gy plan referencing its structure set; dated a week after."""
    ds = rt_object(ex, study, RTPLAN_STORAGE, "RTPLAN", number, "RTPLAN")
    start = (datetime.strptime(study.date, "%Y%m%d") + timedelta(days=7)).strftime("%Y%m%d")
    ds.update(item(FrameOfReferenceUID=frame_uid, PositionReferenceIndicator="",
                   RTPlanLabel="GBM 60Gy", RTPlanName="GBM", RTPlanDate=start,
                   RTPlanTime="090000", RTPlanGeometry="PATIENT", ApprovalStatus="APPROVED"))
    ds.ReferencedStructureSetSequence = [item(ReferencedSOPClassUID=RTSTRUCT_STORAGE,
                                              ReferencedSOPInstanceUID=struct_sop)]
    ds.DoseReferenceSequence = [item(DoseReferenceNumber=1, DoseReferenceStructureType="SITE",
                                     DoseReferenceType="TARGET", TargetPrescriptionDose="60")]
    ds.FractionGroupSequence = [item(
        FractionGroupNumber=1, NumberOfFractionsPlanned=30, NumberOfBeams=2,
        NumberOfBrachyApplicationSetups=0,
        ReferencedBeamSequence=[item(ReferencedBeamNumber=b, BeamMeterset="150")
                                for b in (1, 2)])]
    ds.BeamSequence = [item(BeamNumber=b, BeamName=f"Arc{b}", BeamType="DYNAMIC",
                            RadiationType="PHOTON", TreatmentDeliveryType="TREATMENT",
                            PrimaryDosimeterUnit="MU", NumberOfWedges=0, NumberOfCompensators=0,
                            NumberOfBoli=0, NumberOfBlocks=0, NumberOfControlPoints=0)
                       for b in (1, 2)]
    return ex.save(ds, study)


def rtdose(ex: Export, pt: Patient, study: Study, number: int,
           frame: tuple[sitk.Euler3DTransform, str], plan_sop: str, beam: int | None) -> str:
    """The PLAN dose (beam None) or one BEAM dose of the plan, on the frame's dose grid."""
    description = "RTDOSE" if beam is None else f"RTDOSE Beam {beam}"
    sop = ex.uid(study.uid, description)
    ref = item(ReferencedSOPClassUID=RTPLAN_STORAGE, ReferencedSOPInstanceUID=plan_sop)
    if beam is not None:
        ref.ReferencedFractionGroupSequence = [item(
            ReferencedFractionGroupNumber=1,
            ReferencedBeamSequence=[item(ReferencedBeamNumber=beam)])]
    series_uid = ex.uid(sop, "series")
    headers = {**study.tags(), "SeriesInstanceUID": series_uid, "SeriesNumber": number,
               "SeriesDescription": description,
               "ReferencedRTPlanSequence": [ref], "ContentDate": study.date,
               "ContentTime": "110000", "InstanceCreationDate": study.date}
    path = ex.place(sop, 0, ex.nbia_folder(study, number, description, sop) / "1-1.dcm")
    share = 1.0 if beam is None else BEAM_SHARES[beam - 1]
    write_rtdose(plan_dose(study.head, frame[0], share), path,
                 summation="PLAN" if beam is None else "BEAM", frame_of_reference_uid=frame[1],
                 study_uid=study.uid, sop_uid=sop, headers=headers)
    if beam is None:
        pt.dose = sop
    else:
        pt.beams.append(sop)
        if pt.dose is not None:
            pt.skip[series_uid] = "beam_dose"
    return sop


def _ds_text(value: float) -> str:
    return next(t for t in (f"{value:.{n}g}" for n in range(12, 0, -1)) if len(t) <= 16)


def reg(ex: Export, study: Study, number: int, moving: tuple[sitk.Euler3DTransform, str],
        fixed: tuple[sitk.Euler3DTransform, str], series: Sequence[str]) -> tuple[float, ...]:
    """A Spatial Registration (REG) whose RIGID matrix maps `moving` frame coordinates into the
    `fixed` frame (the REG's own frame, registered RCS); returns that matrix, row-major."""
    ds = rt_object(ex, study, REG_STORAGE, "REG", number, "REG CT to MR")
    ds.update(item(FrameOfReferenceUID=fixed[1], PositionReferenceIndicator="",
                   ContentLabel="CT_TO_MR", ContentDescription="planning CT to planning MR",
                   ContentCreatorName=""))
    matrix = np.linalg.inv(affine_matrix(fixed[0])) @ affine_matrix(moving[0])
    text = [_ds_text(float(v)) for v in matrix.ravel()]

    def registration(frame_uid: str, values: list[str]) -> Dataset:
        return item(FrameOfReferenceUID=frame_uid, MatrixRegistrationSequence=[item(
            MatrixSequence=[item(FrameOfReferenceTransformationMatrixType="RIGID",
                                 FrameOfReferenceTransformationMatrix=values)],
            RegistrationTypeCodeSequence=[])])

    identity = [_ds_text(v) for v in np.eye(4).ravel()]
    ds.RegistrationSequence = [registration(fixed[1], identity), registration(moving[1], text)]
    ds.ReferencedSeriesSequence = [item(SeriesInstanceUID=s, ReferencedInstanceSequence=[
        item(ReferencedSOPClassUID=i.SOPClassUID, ReferencedSOPInstanceUID=i.SOPInstanceUID)
        for i in ex.instances(s)]) for s in series]
    ex.save(ds, study)
    return tuple(float(v) for v in text)


def broken_copy(ex: Export, series_uid: str) -> None:
    """A copy of the series' first slice truncated inside its header, before SOPInstanceUID:
    pydicom reads it without error, but to a dataset without identity (code: unreadable)."""
    first = ex.series_files[series_uid][0]
    data = first.read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    cut = data.index(b"\x08\x00\x18\x00", meta_end) + 6
    n = len(ex.series_files[series_uid])
    path = ex.place("broken", 0, first.parent / f"1-{n + 1:02d}.dcm")
    path.write_bytes(data[:cut])
    ex.broken.append(path)


def not_dicom(ex: Export) -> None:
    """The licence text NBIA downloads carry: not DICOM (code unreadable, or not_dicom)."""
    path = ex.place("not-dicom", 0, ex.root / "LICENSE.txt")
    path.write_text("Creative Commons Attribution 4.0 International (CC BY 4.0)\n")
    ex.broken.append(path)


def patient1(ex: Export) -> Patient:
    """Burdenko-like: planning CT (frame A) with PLAN + BEAM dose, RTPLAN, RTSTRUCT on the CT,
    planning MR T1/CET1/T2/FLAIR (frame B), localizer, MPR, REG A -> B; two follow-ups."""
    head, pt = load_head("gli"), Patient(P1)
    plan = Study(P1, "M", ex.uid(P1, "plan"), "20000823", "RT PLANNING", head)
    ct = (pose(head, (4, -3, 2), (6, -8, 10)), ex.uid(plan.uid, "ct frame"))
    mri = (pose(head), ex.uid(plan.uid, "mr frame"))
    ct_uid = mr(ex, pt, plan, 1, "Head 3.0 H30s", "ct", "ct", ct, "dose_frame",
                ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], KVP="120", ProtocolName="RT Head")
    mr(ex, pt, plan, 2, "3-plane loc", "t1", "loc", mri, "localizer", **SCOUT)
    mr(ex, pt, plan, 3, "T1", "t1", "3d", mri, "precontrast", **MPRAGE)
    cet1 = mr(ex, pt, plan, 4, "CET1", "t1c", "3d", mri, "post_op", **MPRAGE,
              ContrastBolusAgent="Magnevist")
    mr(ex, pt, plan, 5, "T2", "t2", "2d", mri, "not_t1c", **TSE_T2, ProtocolName="")
    flair = mr(ex, pt, plan, 6, "FLAIR", "flair", "2d", mri, "not_t1c", **FLAIR)
    mr(ex, pt, plan, 7, "CET1 MPR sag", "t1c", "mpr", mri, "mpr", **MPRAGE,
       ContrastBolusAgent="Magnevist", ImageType=["DERIVED", "SECONDARY", "MPR"])
    struct = rtstruct(ex, plan, 8, ct_uid, ct)
    plan_sop = rtplan(ex, plan, 9, ct[1], struct)
    rtdose(ex, pt, plan, 10, ct, plan_sop, None)
    rtdose(ex, pt, plan, 11, ct, plan_sop, 1)  # beam_dose: not used beside the PLAN dose
    pt.reg = reg(ex, plan, 12, ct, mri, (ct_uid, cet1))
    broken_copy(ex, flair)
    fu1 = Study(P1, "M", ex.uid(P1, "fu1"), "20001020", "MRI BRAIN W WO CONTRAST", head)
    frame = (pose(head, (2, 0, -3), (3, 4, -5)), ex.uid(fu1.uid, "frame"))
    mr(ex, pt, fu1, 1, "Survey", "t1", "loc", frame, "localizer", **SCOUT)
    mr(ex, pt, fu1, 2, "T2W_TSE", "t2", "2d", frame, "not_t1c", **TSE_T2)
    mr(ex, pt, fu1, 3, "T1W_3D_TFE+C", "t1c", "3d", frame, "event", **TFE,
       ContrastBolusAgent="Gadovist", Manufacturer="Philips Medical Systems")
    fu2 = Study(P1, "M", ex.uid(P1, "fu2"), "20010115", "MRT Schaedel", head)
    frame = (pose(head, (-3, 2, 0), (-4, 2, 6)), ex.uid(fu2.uid, "frame"))
    mr(ex, pt, fu2, 1, "t1_mprage_pre", "t1", "3d", frame, "precontrast", **MPRAGE)
    mr(ex, pt, fu2, 2, "t1_mprage_post KM", "t1c", "3d", frame, "event", **MPRAGE,
       ContrastBolusAgent="Dotarem")
    mr(ex, pt, fu2, 3, "t2_tse_tra", "t2", "2d", frame, "not_t1c", **TSE_T2)
    return pt


def patient2(ex: Export) -> Patient:
    """German names; no REG (dose frame = CT series); only two BEAM doses of one plan on one
    grid (to be summed); a DERIVED reformat, a subtraction, a T1c without ContrastBolusAgent
    and without SeriesDate."""
    head, pt = load_head("met"), Patient(P2)
    plan = Study(P2, "F", ex.uid(P2, "plan"), "20110314", "Bestrahlungsplanung", head)
    ct = (pose(head, (-3, 2, 5), (-5, 6, -8)), ex.uid(plan.uid, "ct frame"))
    mri = (pose(head), ex.uid(plan.uid, "mr frame"))
    ct_uid = mr(ex, pt, plan, 1, "Schaedel nativ 3mm", "ct", "ct", ct, "dose_frame",
                ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], KVP="120")
    mr(ex, pt, plan, 2, "T1 nativ", "t1", "2d", mri, "precontrast", **SE_T1)
    mr(ex, pt, plan, 3, "T1 KM", "t1c", "2d", mri, "post_op", **SE_T1,
       ContrastBolusAgent="Gadovist")
    mr(ex, pt, plan, 4, "T2 TSE tra", "t2", "2d", mri, "not_t1c", **{**TSE_T2, "EchoTime": ""})
    mr(ex, pt, plan, 5, "FLAIR tra", "flair", "2d", mri, "not_t1c", **FLAIR)
    mr(ex, pt, plan, 6, "T1 KM reformatiert", "t1c", "3d", mri, "derived", **SE_T1,
       ContrastBolusAgent="Gadovist", ImageType=["DERIVED", "SECONDARY"])
    plan_sop = rtplan(ex, plan, 8, ct[1], rtstruct(ex, plan, 7, ct_uid, ct))
    rtdose(ex, pt, plan, 9, ct, plan_sop, 1)
    rtdose(ex, pt, plan, 10, ct, plan_sop, 2)
    fu1 = Study(P2, "F", ex.uid(P2, "fu1"), "20110602", "MRT Kopf mit KM", head)
    frame = (pose(head, (3, -2, 1), (5, -3, 4)), ex.uid(fu1.uid, "frame"))
    mr(ex, pt, fu1, 1, "AAHead_Scout", "t1", "loc", frame, "localizer", **SCOUT)
    mr(ex, pt, fu1, 2, "T1+Gd", "t1c", "2d", frame, "event", **SE_T1, ContrastBolusAgent="",
       SeriesDate=None)
    mr(ex, pt, fu1, 3, "T1 KM SUB", "sub", "2d", frame, "subtraction", **SE_T1,
       ContrastBolusAgent="Gadovist", ImageType=["DERIVED", "PRIMARY", "SUBTRACTION"])
    mr(ex, pt, fu1, 4, "T2 FLAIR", "flair", "2d", frame, "not_t1c", **FLAIR)
    fu2 = Study(P2, "F", ex.uid(P2, "fu2"), "20111104", "MRT Kopf mit KM", head)
    frame = (pose(head, (-2, -1, 3), (2, 5, -2)), ex.uid(fu2.uid, "frame"))
    mr(ex, pt, fu2, 1, "T1 KM", "t1c", "2d", frame, "event", **SE_T1,
       ContrastBolusAgent="Gadovist")
    mr(ex, pt, fu2, 2, "T2 TSE tra", "t2", "2d", frame, "not_t1c", **TSE_T2)
    return pt


def patient3(ex: Export) -> Patient:
    """Two MR studies with a contrast T1 each, no RT objects at all: no case (no_dose)."""
    head, pt = load_head("gli"), Patient(P3, no_case="no_dose")
    for n, (date, description) in enumerate((("20150105", "T1 post contrast"),
                                             ("20150410", "T1C"))):
        study = Study(P3, "0000", ex.uid(P3, date), date, "MR BRAIN", head)
        frame = (pose(head, (5 - 4 * n, 0, 2), (0, 10, -3 * n)), ex.uid(study.uid, "frame"))
        mr(ex, pt, study, 1, description, "t1c", "3d", frame, None, **MPRAGE,
           ContrastBolusAgent="Gadovist")
    return pt


def patient4(ex: Export) -> Patient:
    """Planned on the MR itself (dose on the T1c's frame: no dose_frame); the second follow-up
    holds two equally good contrast T1s (tie: that follow-up gives no event)."""
    head, pt = load_head("met"), Patient(P4)
    plan = Study(P4, "F", ex.uid(P4, "plan"), "20190201", "RT PLANNING MR", head)
    mri = (pose(head), ex.uid(plan.uid, "mr frame"))
    mr(ex, pt, plan, 1, "T1", "t1", "3d", mri, "precontrast", **MPRAGE)
    t1c = mr(ex, pt, plan, 2, "T1C", "t1c", "3d", mri, "post_op", **MPRAGE,
             ContrastBolusAgent="Gadovist")
    mr(ex, pt, plan, 3, "T2", "t2", "2d", mri, "not_t1c", **TSE_T2)
    plan_sop = rtplan(ex, plan, 5, mri[1], rtstruct(ex, plan, 4, t1c, mri))
    rtdose(ex, pt, plan, 6, mri, plan_sop, None)
    fu1 = Study(P4, "F", ex.uid(P4, "fu1"), "20190415", "MR BRAIN", head)
    frame = (pose(head, (2, 2, 2), (3, 3, 3)), ex.uid(fu1.uid, "frame"))
    mr(ex, pt, fu1, 1, "T1C", "t1c", "3d", frame, "event", **MPRAGE, ContrastBolusAgent="Gadovist")
    mr(ex, pt, fu1, 2, "FLAIR", "flair", "2d", frame, "not_t1c", **FLAIR)
    fu2 = Study(P4, "F", ex.uid(P4, "fu2"), "20190720", "MR BRAIN", head)
    frame = (pose(head, (-2, 1, 0), (-3, 0, 4)), ex.uid(fu2.uid, "frame"))
    for number in (1, 2):
        mr(ex, pt, fu2, number, "T1 post", "t1c", "3d", frame, "tie", **MPRAGE,
           ContrastBolusAgent="Gadovist")
    return pt


def build_tree(root: Path, layout: str = "nbia", seed: int = 0) -> TreeTruth:
    """Write a DICOM export of four patients under `root` in `layout`; return the truth.

    P1..P4 are documented in patient1..patient4. Every skip code of a series is in its
    patient's `skip_codes` (keyed by SeriesInstanceUID; P3's series carry none, the patient has
    no_case_reason no_dose); the truncated DICOM and LICENSE.txt are in `broken_files`. The
    layout changes only the paths; the same seed gives byte-identical files.
    """
    ex = Export(Path(root), layout, seed)
    patients = [build(ex) for build in (patient1, patient2, patient3, patient4)]
    not_dicom(ex)
    return TreeTruth(ex.root, {p.patient_id: p.truth() for p in patients}, tuple(ex.broken),
                     len(ex.files))


def write_labels_csv(truth: TreeTruth, path: Path,
                     labels: Sequence[str] = ("progression", "pseudoprogression", "response"),
                     extra_rows: Sequence[tuple[str, str, str]] = ()) -> Path:
    """labels.csv (patient_id,event_date,label): one row per event of every patient with a case,
    labels taken in turn; `extra_rows` adds rows (unmatched dates, unknown labels)."""
    rows = [(p.patient_id, date) for p in truth.patients.values() if p.no_case_reason is None
            for date in p.event_dates]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("patient_id", "event_date", "label"))
        writer.writerows((pid, date, labels[i % len(labels)])
                         for i, (pid, date) in enumerate(rows))
        writer.writerows(extra_rows)
    return path

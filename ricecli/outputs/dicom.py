"""DICOM results for PACS (`--dicom-out DIR`): a Comprehensive 3D SR and a Parametric Map.

Both reference the event scan's study and series (patient and study identifiers copied from
it, new series and instance UIDs), are written with highdicom and say RESEARCH USE ONLY.

- `SR_<SOPInstanceUID>.dcm`: TID 1500 measurement report, one measurement group on the new enhancing
  lesion (finding type SCT 301766008 "Lesion of Brain"): the classification (RN100, value
  DCM 111338 "Recurrent malignancy" or RN101 RICE), calibrated and raw p(recurrence), the
  members' spread and agreement, "uncertain" yes/no and the QA verdict, the model's
  name/version/sha256 as the algorithm identification. Codes with scheme 99RICENET are this
  tool's own (DICOM's private-scheme convention) where no standard code fits.
- `PM_<SOPInstanceUID>.dcm` (explain): the occlusion map as a float Parametric Map on the
  event series' own grid and frame of reference.

UIDs are derived from the inputs and the answer (same inputs and model: the same UIDs and
file names, so a re-run replaces the object, in the folder and in a PACS, instead of adding a
copy; other cases written into the same folder keep theirs).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli import __version__
from ricecli.errors import InputError, OutputError

SR_PREFIX = "SR_"  # files are SR_<SOPInstanceUID>.dcm and PM_<SOPInstanceUID>.dcm
PM_PREFIX = "PM_"
SCHEME = "99RICENET"
RESEARCH = "RESEARCH USE ONLY"
MANUFACTURER = "ricenet (research software)"
INSTALL_FIX = "install the DICOM extra: pip install 'ricecli[dicom]' (highdicom)"


def _hd():
    try:
        import highdicom
    except ImportError:
        raise InputError("--dicom-out needs highdicom, which is not installed",
                         fix=INSTALL_FIX) from None
    return highdicom


def _code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


CLASSIFICATION = ("RN100", "Lesion classification (recurrence vs RICE)")


# --- the event series ------------------------------------------------------------------------

def event_series(event: Path) -> list[pydicom.Dataset]:
    """Headers of the event scan's DICOM slices, in the order the reader stacks them.

    A folder: the series with the most slices (as ricecli.io.dicom picks it); a file: its
    series. InputError (exit 2) when the event scan is not DICOM."""
    from ricecli.io.dicom import _headers, _series_key, is_dicom_file, read_header

    event = Path(event)
    uid = None
    if event.is_file() and is_dicom_file(event):
        uid = str(read_header(event).get("SeriesInstanceUID", ""))
        folder = event.parent
    elif event.is_dir():
        folder = event
    else:
        raise InputError("is not a DICOM series, so --dicom-out has no study or series to "
                         "reference", event, fix="give the event T1c as a DICOM series folder "
                         "(or file of it), or leave out --dicom-out")
    groups: dict[tuple, list] = defaultdict(list)
    for _, ds in _headers(folder):
        key = _series_key(ds)
        if key is not None and (uid is None or key[0] == uid):
            groups[key].append(ds)
    if not groups:
        raise InputError("holds no DICOM image series for --dicom-out to reference", event,
                         fix="give the event T1c as a DICOM series folder, or leave out "
                         "--dicom-out")
    key, slices = max(groups.items(), key=lambda kv: (len(kv[1]), kv[0][0]))
    iop = np.asarray([float(v) for v in slices[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return sorted(slices, key=lambda ds: float(np.dot(
        [float(v) for v in ds.ImagePositionPatient], normal)))


def check_dicom_out(out_dir: Path | None, event: Path, inputs: list[Path]) -> None:
    """Refuse before the slow part: a non-DICOM event scan, an output folder that is, holds or
    lies in an input, or highdicom missing. Nothing is written."""
    from ricecli.io.files import check_writable, refuse_inputs

    if out_dir is None:
        return
    event = Path(event)
    if not (event.is_dir() or event.suffix.lower() in (".dcm", ".dicom", ".ima", "")):
        raise InputError("is not a DICOM series, so --dicom-out has no study or series to "
                         "reference", event, fix="give the event T1c as a DICOM series folder "
                         "(or file of it), or leave out --dicom-out")
    out = Path(out_dir).expanduser().resolve()
    refuse_inputs(out, inputs, "folder", "--dicom-out")
    check_writable(out, "--dicom-out")
    if out.exists() and not out.is_dir():
        raise OutputError("--dicom-out is a file", out_dir, fix="give a folder")
    event_series(event)
    _hd()


def _uid(*parts: object) -> str:
    """A 2.25 UID from the first 128 bits of a SHA-256 of `parts` (name-based, like UUIDv5)."""
    blob = json.dumps(["ricenet", __version__, *parts], sort_keys=True, default=str).encode()
    return f"2.25.{int(hashlib.sha256(blob).hexdigest()[:32], 16)}"


def _save_atomic(ds: pydicom.Dataset, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path


# --- the structured report -------------------------------------------------------------------

def qa_verdict(result: dict) -> tuple[str, list[str]]:
    """The QA verdict and its reasons from the result record ('not assessed' if absent)."""
    qa = result.get("qa") or {}
    verdict = qa.get("verdict") if isinstance(qa, dict) else None
    reasons = qa.get("reasons") if isinstance(qa, dict) else None
    return (str(verdict) if verdict else "not assessed"), [str(r) for r in (reasons or [])]


def build_sr(result: dict, series: list[pydicom.Dataset]):
    """The Comprehensive 3D SR (TID 1500) of one classification result."""
    _hd()
    from highdicom.sr import (
        AlgorithmIdentification,
        CodedConcept,
        Comprehensive3DSR,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    model = result["model"]
    probs = result["probabilities"]
    raw = result.get("probabilities_raw", probs)
    unc = result.get("uncertainty") or {}
    verdict, _ = qa_verdict(result)
    key = [series[0].SeriesInstanceUID, model["sha256"], result["label"],
           round(float(probs["recurrence"]), 9), verdict, bool(unc.get("uncertain"))]
    finding = codes.DCM.RecurrentMalignancy if result["label"] == "recurrence" else _code(
        "RN101", "Radiation-induced contrast enhancement (RICE)")
    yes_no = {True: codes.SCT.Yes, False: codes.SCT.No}
    unit = codes.UCUM.NoUnits
    algorithm = AlgorithmIdentification(
        name=str(model["name"])[:64], version=str(model["version"])[:64],
        parameters=[f"sha256={model['sha256']}",
                    f"calibration={json.dumps(result.get('calibration', {}).get('method'))}",
                    f"ricecli={__version__}"])
    measurements = [
        Measurement(_code("RN001", "Probability of tumour recurrence (calibrated)"),
                    float(probs["recurrence"]), unit, algorithm_id=algorithm),
        Measurement(_code("RN002", "Probability of tumour recurrence (uncalibrated)"),
                    float(raw["recurrence"]), unit, algorithm_id=algorithm),
    ]
    if "member_sd_p_recurrence" in unc:
        measurements += [
            Measurement(_code("RN003", "Ensemble members' SD of p(recurrence)"),
                        float(unc["member_sd_p_recurrence"]), unit, algorithm_id=algorithm),
            Measurement(_code("RN004", "Fraction of ensemble members voting the label"),
                        float(unc["agreement"]), unit, algorithm_id=algorithm)]
    evaluations = [
        QualitativeEvaluation(_code(*CLASSIFICATION), finding),
        QualitativeEvaluation(_code("RN010", "Result uncertain (members or conformal set)"),
                              yes_no[bool(unc.get("uncertain", False))]),
        QualitativeEvaluation(_code("RN011", "Input quality verdict"),
                              _code("RN-QA-NA" if verdict == "not assessed" else
                                    f"RN-QA-{verdict.upper()}"[:16], f"QA {verdict}"[:64])),
        QualitativeEvaluation(_code("RN012", "Intended use"),
                              _code("RN-RESEARCH", "Research use only, not for clinical use")),
    ]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_uid("tracking", *key),
                                               identifier="ricenet recurrence vs RICE"),
        finding_type=codes.SCT.LesionOfBrain, algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds) for ds in series])
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=_uid("device", model["sha256"]), name=str(model["name"])[:64],
            manufacturer_name=MANUFACTURER, model_name=str(model["version"])[:64],
            serial_number=str(model["sha256"])[:64]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=CodedConcept(codes.LN.BrainMRI.value, "LN", "Brain MRI"),
        imaging_measurements=[group])
    sr = Comprehensive3DSR(
        evidence=series, content=report[0], series_instance_uid=_uid("sr-series", *key),
        series_number=9101, sop_instance_uid=_uid("sr", *key), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = f"{RESEARCH} ricenet recurrence vs RICE"[:64]
    sr.SoftwareVersions = __version__
    sr.ManufacturerModelName = str(model["name"])[:64]
    return sr


# --- the parametric map ----------------------------------------------------------------------

def build_parametric_map(values: sitk.Image, series: list[pydicom.Dataset], result: dict,
                         target: str = "recurrence"):
    """A float Parametric Map of `values` (an image on the event series' grid: frame k is
    the k-th slice along row x column, as ricecli's reader stacks them)."""
    hd = _hd()
    from highdicom import PixelMeasuresSequence, PlaneOrientationSequence, PlanePositionSequence
    from highdicom.pm import ParametricMap, RealWorldValueMapping
    from pydicom.sr.codedict import codes

    arr = sitk.GetArrayFromImage(values).astype(np.float32)
    first = series[0]
    if arr.shape == (len(series), int(first.Rows), int(first.Columns)):
        # the event series' own grid: its slices' exact positions, orientation and spacing
        positions = [PlanePositionSequence("PATIENT", [float(v) for v in
                                                       ds.ImagePositionPatient])
                     for ds in series]
        iop = [float(v) for v in first.ImageOrientationPatient]
        pixel_spacing = [float(v) for v in first.PixelSpacing]
        thickness = float(first.get("SliceThickness") or values.GetSpacing()[2])
    else:  # the reader regularised an unevenly spaced stack: the map's own grid
        positions = [PlanePositionSequence("PATIENT", [float(v) for v in
                                                       values.TransformIndexToPhysicalPoint(
                                                           (0, 0, k))])
                     for k in range(values.GetSize()[2])]
        d = np.asarray(values.GetDirection(), float).reshape(3, 3)
        iop = [float(v) for v in (*d[:, 0], *d[:, 1])]
        pixel_spacing = [float(values.GetSpacing()[1]), float(values.GetSpacing()[0])]
        thickness = float(values.GetSpacing()[2])
    orientation = PlaneOrientationSequence("PATIENT", iop)
    measures = PixelMeasuresSequence(pixel_spacing=pixel_spacing, slice_thickness=thickness,
                                     spacing_between_slices=float(values.GetSpacing()[2]))
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        hi = lo + 1e-6
    mapping = RealWorldValueMapping(
        lut_label="OCCLUSION", lut_explanation=f"drop in p({target}) when the region is "
        "occluded"[:64], unit=codes.UCUM.NoUnits, value_range=(lo, hi), slope=1.0,
        intercept=0.0)
    model = result["model"]
    key = [series[0].SeriesInstanceUID, model["sha256"], target, float(arr.sum()),
           list(arr.shape)]
    span = max(abs(lo), abs(hi))
    pm = ParametricMap(
        source_images=series, pixel_array=arr, series_instance_uid=_uid("pm-series", *key),
        series_number=9102, sop_instance_uid=_uid("pm", *key), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=str(model["name"])[:64],
        software_versions=__version__, device_serial_number=str(model["sha256"])[:64],
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(
            window_center=0.0, window_width=2 * span if span > 0 else 1.0,
            window_explanation="symmetric about 0 (no change)")],
        content_label="OCCLUSION", content_description=f"occlusion sensitivity for {target}",
        pixel_measures=measures, plane_orientation=orientation, plane_positions=positions,
        content_qualification=hd.ContentQualificationValues.RESEARCH)
    pm.SeriesDescription = f"{RESEARCH} ricenet occlusion map"[:64]
    return pm


# --- writing ---------------------------------------------------------------------------------

def write_dicom_outputs(out_dir: Path, result: dict, event: Path,
                        occlusion: sitk.Image | None = None,
                        target: str = "recurrence") -> list[Path]:
    """Write the SR (and the occlusion Parametric Map when given) into out_dir; nothing when
    the result has no label (QA refused the case)."""
    if result.get("label") is None:
        return []
    series = event_series(event)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = build_sr(result, series)
    written = [_save_atomic(sr, out_dir / f"{SR_PREFIX}{sr.SOPInstanceUID}.dcm")]
    if occlusion is not None:
        pm = build_parametric_map(occlusion, series, result, target)
        written.append(_save_atomic(pm, out_dir / f"{PM_PREFIX}{pm.SOPInstanceUID}.dcm"))
    return written


def read_parametric_map(path: Path) -> sitk.Image:
    """A Parametric Map written here as a SimpleITK image (pydicom; GDCM cannot read PMs).

    Geometry from the per-frame positions and shared orientation/pixel measures, axes as
    ricecli's DICOM reader builds them (row, column, row x column)."""
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray([float(v) for v in
                      shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    measures = shared.PixelMeasuresSequence[0]
    row_sp, col_sp = (float(v) for v in measures.PixelSpacing)
    ipp = np.asarray([[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                      for f in ds.PerFrameFunctionalGroupsSequence])
    normal = np.cross(iop[:3], iop[3:])
    order = np.argsort(ipp @ normal, kind="stable")
    ipp = ipp[order]
    step = float(np.median(np.diff(ipp @ normal))) if len(ipp) > 1 else \
        float(measures.get("SpacingBetweenSlices", measures.SliceThickness))
    frames = np.asarray(ds.pixel_array, np.float32).reshape(len(ipp), int(ds.Rows),
                                                            int(ds.Columns))
    image = sitk.GetImageFromArray(frames[order])
    image.SetOrigin(tuple(ipp[0]))
    image.SetSpacing((col_sp, row_sp, step))
    image.SetDirection(tuple(np.column_stack([iop[:3], iop[3:], normal]).ravel()))
    return image


def write_for_explain(out_dir: Path, case, model, engine, explained, inputs) -> list[Path]:
    """explain --dicom-out: one more engine call for the members (the SR's p, spread and
    uncertainty), then the SR and the occlusion map of `explained` (an ExplainResult)."""
    from ricecli.outputs.report import build_result, case_inputs_record
    from ricecli.prepare import to_tensor

    probs, members = engine.run(to_tensor(case, model.spec)[None])
    result = build_result(probs[0], members[0], model, engine, getattr(case, "qa", {}) or {},
                          {}, case_inputs_record(inputs))
    return write_dicom_outputs(out_dir, result, inputs.event, explained.event_maps["all"],
                               explained.target)


def write_for_batch_case(out_dir: Path, result: dict, event: Path, explain_dir: str = ""
                         ) -> list[Path]:
    """batch --dicom-out: the SR, plus the occlusion map when the case was explained."""
    occlusion, target = None, "recurrence"
    if explain_dir:
        found = Path(explain_dir) / "occlusion.nii.gz"
        if found.is_file():
            occlusion = sitk.ReadImage(str(found), sitk.sitkFloat32)
            try:
                target = json.loads((Path(explain_dir) / "explain.json").read_text())["target"]
            except (OSError, ValueError, KeyError):
                pass
    return write_dicom_outputs(out_dir, result, event, occlusion, target)


def check_batch_dicom_out(out_dir: Path | None, cases: list) -> None:
    """batch --dicom-out: refuse (exit 2, before any case runs) when a case's event scan is
    not a DICOM series, or highdicom is missing."""
    if out_dir is None:
        return
    for case in cases:
        event = Path(case.event)
        if not (event.is_dir() or event.suffix.lower() in (".dcm", ".dicom", ".ima", "")):
            raise InputError(f"case {case.case_id}: the event scan is not a DICOM series, so "
                             "--dicom-out has no study or series to reference", event,
                             fix="give DICOM series folders for the event scans, or leave "
                             "out --dicom-out")
    from ricecli.io.files import check_writable

    check_writable(Path(out_dir).expanduser().resolve(), "--dicom-out")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError("--dicom-out is a file", out_dir, fix="give a folder")
    _hd()

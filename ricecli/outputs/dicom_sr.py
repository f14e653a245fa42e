"""The DICOM Comprehensive 3D SR (TID 1500) of one classification result.

One measurement group on the new enhancing lesion (finding type SCT 301766008 "Lesion of
Brain"): the classification (RN100, value DCM 111338 "Recurrent malignancy" or RN101 RICE),
calibrated and raw p(recurrence), the members' spread and agreement, "uncertain" yes/no and the
QA verdict; the model's name/version/sha256 identify the algorithm.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pydicom

from ricecli import __version__
from ricecli.outputs.dicom_series import MANUFACTURER, RESEARCH, code, highdicom, uid

if TYPE_CHECKING:
    from highdicom.sr import Comprehensive3DSR

CLASSIFICATION = ("RN100", "Lesion classification (recurrence vs RICE)")


def build_sr(result: dict[str, Any], series: list[pydicom.Dataset]) -> Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) of one classification result; `series`: headers
    cleaned by outputs.dicom_header.clean_series (as write_dicom_outputs does, once)."""
    highdicom()
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
    raw = result.get("probabilities_uncalibrated", probs)
    unc = result.get("uncertainty") or {}
    verdict = str((result.get("qa") or {}).get("verdict") or "not assessed")
    key = [series[0].SeriesInstanceUID, model["sha256"], result["label"],
           round(float(probs["recurrence"]), 9), verdict, bool(unc.get("uncertain"))]
    finding = codes.DCM.RecurrentMalignancy if result["label"] == "recurrence" else code(
        "RN101", "Radiation-induced contrast enhancement (RICE)")
    yes_no = {True: codes.SCT.Yes, False: codes.SCT.No}
    unit = codes.UCUM.NoUnits
    algorithm = AlgorithmIdentification(
        name=str(model["name"])[:64], version=str(model["version"])[:64],
        parameters=[f"sha256={model['sha256']}",
                    f"calibration={json.dumps(result.get('calibration', {}).get('method'))}",
                    f"ricecli={__version__}"])
    measurements = [
        Measurement(code("RN001", "Probability of tumour recurrence (calibrated)"),
                    float(probs["recurrence"]), unit, algorithm_id=algorithm),
        Measurement(code("RN002", "Probability of tumour recurrence (uncalibrated)"),
                    float(raw["recurrence"]), unit, algorithm_id=algorithm),
    ]
    if "member_sd_p_recurrence" in unc:
        measurements += [
            Measurement(code("RN003", "Ensemble members' SD of p(recurrence)"),
                        float(unc["member_sd_p_recurrence"]), unit, algorithm_id=algorithm),
            Measurement(code("RN004", "Fraction of ensemble members voting the label"),
                        float(unc["agreement"]), unit, algorithm_id=algorithm)]
    evaluations = [
        QualitativeEvaluation(code(*CLASSIFICATION), finding),
        QualitativeEvaluation(code("RN010", "Result uncertain (members or conformal set)"),
                              yes_no[bool(unc.get("uncertain", False))]),
        QualitativeEvaluation(code("RN011", "Input quality verdict"),
                              code("RN-QA-NA" if verdict == "not assessed" else
                                    f"RN-QA-{verdict.upper()}"[:16], f"QA {verdict}"[:64])),
        QualitativeEvaluation(code("RN012", "Intended use"),
                              code("RN-RESEARCH", "Research use only, not for clinical use")),
    ]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid("tracking", *key),
                                               identifier="ricenet recurrence vs RICE"),
        finding_type=codes.SCT.LesionOfBrain, algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[SourceImageForMeasurementGroup.from_source_image(ds) for ds in series])
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uid("device", model["sha256"]), name=str(model["name"])[:64],
            manufacturer_name=MANUFACTURER, model_name=str(model["version"])[:64],
            serial_number=str(model["sha256"])[:64]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=CodedConcept(codes.LN.BrainMRI.value, "LN", "Brain MRI"),
        imaging_measurements=[group])
    sr = Comprehensive3DSR(
        evidence=series, content=report[0], series_instance_uid=uid("sr-series", *key),
        series_number=9101, sop_instance_uid=uid("sr", *key), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = f"{RESEARCH} ricenet recurrence vs RICE"[:64]
    sr.SoftwareVersions = __version__
    sr.ManufacturerModelName = str(model["name"])[:64]
    return sr


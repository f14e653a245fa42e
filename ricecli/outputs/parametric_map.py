"""The occlusion map as a DICOM float Parametric Map on the event series' own grid, and back.

Frame k is the k-th slice along row x column (as ricecli's reader stacks the event series);
`read_parametric_map` rebuilds the SimpleITK image with pydicom (GDCM cannot read PMs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import SimpleITK as sitk

from ricecli import __version__
from ricecli.outputs.dicom_series import MANUFACTURER, RESEARCH, highdicom, uid

if TYPE_CHECKING:
    from highdicom.pm import ParametricMap


def build_parametric_map(values: sitk.Image, series: list[pydicom.Dataset],
                         result: dict[str, Any], target: str = "recurrence") -> ParametricMap:
    """A float Parametric Map of `values` (an image on the event series' grid: frame k is
    the k-th slice along row x column, as ricecli's reader stacks them); `series`: headers
    cleaned by outputs.dicom_header.clean_series (as write_dicom_outputs does, once)."""
    hd = highdicom()
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
        source_images=series, pixel_array=arr, series_instance_uid=uid("pm-series", *key),
        series_number=9102, sop_instance_uid=uid("pm", *key), instance_number=1,
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


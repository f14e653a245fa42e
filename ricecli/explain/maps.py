"""Maps meet scan geometry: a model-space array as an image, on the event scan's grid, its peak.

SimpleITK is imported here (and only here in explain/) so that the occlusion core needs numpy
alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ricecli.errors import RicenetError

if TYPE_CHECKING:
    import SimpleITK as sitk


def map_image(values_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A model-space array as an image with the model-space grid's geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.asarray(values_zyx, np.float32))
    img.CopyInformation(reference)
    return img


def to_event_grid(values_zyx: np.ndarray, reference: sitk.Image, event_image: sitk.Image,
                  model_to_event: sitk.Transform) -> sitk.Image:
    """Resample a model-space map onto the event scan's own grid (linear, 0 outside)."""
    import SimpleITK as sitk

    try:
        event_to_model = model_to_event.GetInverse()
    except RuntimeError as err:
        raise RicenetError(f"the model-to-event transform cannot be inverted ({err})",
                           fix="use a rigid/affine registration") from None
    out: sitk.Image = sitk.Resample(map_image(values_zyx, reference), event_image,
                                    event_to_model, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return out


def peak_point(image: sitk.Image) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Index (x, y, z) and world LPS mm of the map's strongest voxel (largest |value|: a
    region that argues against the target is as strong as one that supports it)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(image)
    flat = int(np.argmax(np.abs(arr)))
    z, y, x = np.unravel_index(flat, arr.shape)
    index = (int(x), int(y), int(z))
    px, py, pz = (float(v) for v in image.TransformIndexToPhysicalPoint(index))
    return index, (px, py, pz)


def peak_value(image: sitk.Image, index_xyz: tuple[int, int, int]) -> float:
    """The map's value at an (x, y, z) index."""
    import SimpleITK as sitk

    return float(sitk.GetArrayViewFromImage(image)[index_xyz[::-1]])

"""Small real cases for the preparation tests: the shipped template, moved rigidly onto 2 mm grids.

The anatomy is the template itself, so the truth is known: the event->template registration
should undo the event's pose, and a dose peak placed at a template point should land there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ricecli.geometry.template import load_template

DOSE_PEAK_LPS = np.array([25.0, 10.0, 20.0])  # in the template brain, left-posterior
POST_POSE = ((0.05, -0.08, 0.10), (5.0, -8.0, 6.0))
EVENT_POSE = ((-0.06, 0.04, -0.05), (-6.0, 4.0, 10.0))


def pose(angles: tuple, shift: tuple) -> sitk.Euler3DTransform:
    """Scan point -> template point (a head placed in the scanner, rotated about the brain)."""
    t = sitk.Euler3DTransform()
    t.SetCenter((0.0, 17.0, 7.0))
    t.SetRotation(*angles)
    t.SetTranslation(shift)
    return t


def grid(size: tuple, spacing: float, direction=np.eye(3), centre=(0.0, 17.0, 7.0)) -> sitk.Image:
    """An empty float32 grid centred on `centre` with the given direction matrix."""
    d = np.asarray(direction, float)
    img = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    img.SetSpacing([float(spacing)] * 3)
    img.SetDirection(d.ravel().tolist())
    img.SetOrigin((np.asarray(centre) - d @ (spacing * (np.asarray(size) - 1) / 2)).tolist())
    return img


def anatomy() -> sitk.Image:
    """The template T1 as an MR-like image (0..1000)."""
    return load_template().t1 * 1000.0


def scan(p: sitk.Euler3DTransform, reference: sitk.Image) -> sitk.Image:
    """The anatomy as a scanner in pose `p` would store it on `reference`."""
    return sitk.Resample(anatomy(), reference, p, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def oblique() -> np.ndarray:
    t = sitk.Euler3DTransform()
    t.SetRotation(0.15, -0.1, 0.2)
    return np.asarray(t.GetMatrix()).reshape(3, 3)


def dose_in(frame_pose: sitk.Euler3DTransform, size=(72, 84, 72), spacing=2.5,
            peak=DOSE_PEAK_LPS) -> sitk.Image:
    """A 60 Gy Gaussian dose on a grid of the scan frame whose pose is `frame_pose`."""
    centre = np.asarray(frame_pose.GetInverse().TransformPoint(peak.tolist()))
    ref = grid(size, spacing, centre=centre)
    zyx = np.indices(ref.GetSize()[::-1]).reshape(3, -1)[::-1].T
    world = np.asarray(ref.GetOrigin()) + zyx * spacing
    r2 = ((world - centre) ** 2).sum(1)
    values = (60.0 * np.exp(-r2 / (2 * 25.0**2))).reshape(ref.GetSize()[::-1])
    out = sitk.GetImageFromArray(values.astype(np.float32))
    out.CopyInformation(ref)
    return out


def write_case(folder: Path, event_direction=np.eye(3), event_ext: str = ".nii.gz") -> dict:
    """post_op/event/dose files of one synthetic case; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    post = scan(pose(*POST_POSE), grid((96, 112, 96), 2.0))
    event = scan(pose(*EVENT_POSE), grid((100, 110, 90), 2.0, event_direction))
    paths = {"post_op": folder / "post_op.nii.gz", "event": folder / f"event{event_ext}",
             "dose": folder / "dose.nii.gz"}
    sitk.WriteImage(post, str(paths["post_op"]))
    sitk.WriteImage(event, str(paths["event"]))
    sitk.WriteImage(dose_in(pose(*POST_POSE)), str(paths["dose"]))
    return paths

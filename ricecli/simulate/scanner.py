"""Scanner-like acquisition: head pose, native grids (oblique, anisotropic, any orientation),
intensity scale, bias field and Rician noise; and the planning system's dose grid.

A pose is a rigid transform from scanner world (LPS mm) to the anatomy frame, so that
`sitk.Resample(anatomy_image, native_grid, pose)` acquires the anatomy on the native grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ricecli.simulate.anatomy import HEAD_CENTRE_MM, Anatomy

# (name, in-plane mm range, slice mm range, orientations); 3D and 2D protocols seen in practice
# name, in-plane spacing range (mm), slice thickness range (mm), orientations
ScanProtocol = tuple[str, tuple[float, float], tuple[float, float], tuple[str, ...]]
PROTOCOLS: dict[str, list[ScanProtocol]] = {
    "easy": [("3D T1c 1 mm", (0.95, 1.05), (0.95, 1.1), ("axial", "sagittal"))],
    "standard": [
        ("3D T1c MPRAGE", (0.9, 1.05), (0.9, 1.2), ("sagittal", "axial")),
        ("3D T1c anisotropic", (0.85, 1.0), (1.5, 2.0), ("axial", "coronal")),
        ("2D T1c SE 3 mm", (0.7, 0.95), (3.0, 4.0), ("axial", "coronal")),
        ("2D T1c SE 5 mm", (0.45, 0.55), (5.0, 6.0), ("axial",)),
    ],
}
PROTOCOLS["hard"] = PROTOCOLS["standard"]
# deg, mm: each visit's head pose from the template (a clinic's range), and between the visits
POSE_FROM_TEMPLATE = {"easy": (5.0, 8.0), "standard": (15.0, 20.0), "hard": (20.0, 25.0)}
POSE_LIMITS = {"easy": (3.0, 5.0), "standard": (10.0, 15.0), "hard": (12.0, 20.0)}
OBLIQUE_DEG = {"easy": 0.0, "standard": 15.0, "hard": 25.0}
NOISE = {"easy": (0.01, 0.02), "standard": (0.02, 0.045), "hard": (0.04, 0.07)}  # x WM signal
BIAS = {"easy": 0.05, "standard": 0.15, "hard": 0.25}
MAX_VOXELS = 12_000_000
AXES = {  # columns: world directions of the i (row), j (column), k (slice) index axes
    "axial": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float),
    "sagittal": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float),
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),
}


@dataclass
class Acquisition:
    """One visit's pose and grid plus its scanner intensity settings."""

    pose: sitk.AffineTransform
    grid: sitk.Image
    protocol: str
    orientation: str
    scale: float
    noise_sigma: float  # fraction of the white-matter signal
    bias_amplitude: float
    rotation_deg: float
    translation_mm: list


def pose_matrix(pose: sitk.AffineTransform) -> list:
    """The 4x4 homogeneous scanner -> anatomy matrix (rows), for the ground truth."""
    a = np.asarray(pose.GetMatrix()).reshape(3, 3)
    c = np.asarray(pose.GetCenter())
    t = np.asarray(pose.GetTranslation()) + c - a @ c
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = a, t
    return np.round(m, 6).tolist()


def matrix_transform(matrix: list[list[float]]) -> sitk.AffineTransform:
    """Inverse of `pose_matrix`: a sitk transform from a 4x4 matrix."""
    m = np.asarray(matrix, float)
    t = sitk.AffineTransform(3)
    t.SetMatrix(m[:3, :3].ravel().tolist())
    t.SetTranslation(m[:3, 3].tolist())
    return t


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a random axis by an angle uniform in [0, max_deg]."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return Rotation.from_rotvec(axis * np.deg2rad(rng.uniform(0, max_deg))).as_matrix()


def random_shift(rng: np.random.Generator, max_mm: float) -> np.ndarray:
    u = rng.normal(size=3)
    return u / np.linalg.norm(u) * rng.uniform(0, max_mm)


def pose_transform(rot: np.ndarray, shift: np.ndarray) -> sitk.AffineTransform:
    """Scanner -> anatomy: p = R (x - c) + c + shift, c = head centre."""
    t = sitk.AffineTransform(3)
    t.SetCenter(HEAD_CENTRE_MM.tolist())
    t.SetMatrix(rot.ravel().tolist())
    t.SetTranslation(shift.tolist())
    return t


def visit_poses(rng: np.random.Generator, difficulty: str) -> tuple[tuple, tuple]:
    """(R, t) for post-op and event, each within the difficulty's range from the template
    (standard: 15 deg, 20 mm, as heads lie in clinical scanners), differing from each other by
    up to the between-visit limit (standard: 10 deg, 15 mm).

    The event pose is drawn first; post-op = a between-visit motion of it, redrawn until it too
    lies within range (deterministic: the case's own stream)."""
    max_deg, max_mm = POSE_FROM_TEMPLATE[difficulty]
    step_deg, step_mm = POSE_LIMITS[difficulty]
    r_event, t_event = random_rotation(rng, max_deg), random_shift(rng, max_mm)
    for _ in range(100):
        r_delta, t_delta = random_rotation(rng, step_deg), random_shift(rng, step_mm)
        r_post, t_post = r_delta @ r_event, t_event + t_delta
        if angle_deg(r_post) <= max_deg and np.linalg.norm(t_post) <= max_mm:
            break
    else:  # practically never (acceptance is >= ~1/4): the smallest motion, halved
        r_post, t_post = r_event, t_event * 0.5
    return (r_post, t_post), (r_event, t_event)


def angle_deg(rot: np.ndarray) -> float:
    """The angle (deg) of a rotation matrix."""
    return float(np.rad2deg(Rotation.from_matrix(rot).magnitude()))


def _brain_corners(anat: Anatomy, margin_mm: float) -> np.ndarray:
    """Corners of the brain's bounding box (anatomy frame, mm), grown by a margin."""
    zz, yy, xx = np.nonzero(anat.brain)
    lo = [xx.min(), yy.min(), zz.min()]
    hi = [xx.max(), yy.max(), zz.max()]
    pts = np.asarray([
        anat.grid.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
        for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])
    ])
    centre = pts.mean(axis=0)
    return pts + np.sign(pts - centre) * margin_mm


def _to_scanner(pose: sitk.AffineTransform, pts: np.ndarray) -> np.ndarray:
    inv = pose.GetInverse()
    return np.asarray([inv.TransformPoint(p.tolist()) for p in pts])


def native_grid(rng: np.random.Generator, anat: Anatomy, pose: sitk.AffineTransform,
                difficulty: str, voxel_scale: float,
                head_corners: np.ndarray | None = None) -> tuple[sitk.Image, str, str]:
    """A scanner grid covering the brain (skull-stripped) or the head (`head_corners`, skull on:
    then half the margins, as a clinic's field of view is set on the head): protocol spacing,
    orientation, obliquity, axis flips."""
    protocols = PROTOCOLS[difficulty]
    name, inplane, thick, orients = protocols[int(rng.integers(len(protocols)))]
    orientation = orients[int(rng.integers(len(orients)))]
    axes = AXES[orientation] * np.where(rng.random(3) < 0.3, -1.0, 1.0)
    axes = random_rotation(rng, OBLIQUE_DEG[difficulty]) @ axes
    s_ip = rng.uniform(*inplane) * voxel_scale
    spacing = np.array([s_ip, s_ip, rng.uniform(*thick) * voxel_scale])
    box = _brain_corners(anat, 0.0) if head_corners is None else head_corners
    corners = _to_scanner(pose, box)
    proj = corners @ axes  # coordinates along each index axis
    margin = np.array([rng.uniform(8, 25), rng.uniform(8, 25), rng.uniform(4, 12)])
    if head_corners is not None:
        margin *= 0.5
    lo, hi = proj.min(axis=0) - margin, proj.max(axis=0) + margin
    size = np.ceil((hi - lo) / spacing).astype(int) + 1
    while size.prod() > MAX_VOXELS:
        spacing[:2] *= 1.1
        size = np.ceil((hi - lo) / spacing).astype(int) + 1
    grid = sitk.Image(size.tolist(), sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(axes.ravel().tolist())
    grid.SetOrigin((axes @ lo).tolist())
    return grid, name, orientation


def sample_acquisition(rng: np.random.Generator, anat: Anatomy, rot: np.ndarray, shift: np.ndarray,
                       difficulty: str, voxel_scale: float,
                       head_corners: np.ndarray | None = None) -> Acquisition:
    """Everything the scanner decides for one visit (`head_corners`: a skull-on scan's box)."""
    pose = pose_transform(rot, shift)
    grid, protocol, orientation = native_grid(rng, anat, pose, difficulty, voxel_scale,
                                              head_corners)
    return Acquisition(
        pose=pose,
        grid=grid,
        protocol=protocol,
        orientation=orientation,
        scale=float(rng.uniform(300.0, 3000.0)),
        noise_sigma=float(rng.uniform(*NOISE[difficulty])),
        bias_amplitude=float(rng.uniform(0.3, 1.0) * BIAS[difficulty]),
        rotation_deg=angle_deg(rot),
        translation_mm=[round(float(v), 3) for v in shift],
    )


def _bias_profiles(rng: np.random.Generator, size_xyz: tuple, amplitude: float) -> list:
    """Separable smooth multiplicative field exp(f(x) + g(y) + h(z)) as three 1D profiles."""
    parts = []
    for n in size_xyz:
        u = np.linspace(-1, 1, n, dtype=np.float32)
        a, b = rng.normal(size=2) * amplitude
        parts.append(np.exp(a * u + b * (u * u - 1 / 3)).astype(np.float32))
    return parts  # x, y, z


def _rician(rng: np.random.Generator, values: np.ndarray, sigma: float) -> np.ndarray:
    """|values + complex Gaussian noise| (in place on values)."""
    sigma = np.float32(sigma)
    noise = rng.standard_normal(values.shape, dtype=np.float32)
    noise *= sigma
    values += noise
    rng.standard_normal(values.shape, dtype=np.float32, out=noise)
    noise *= sigma
    return np.hypot(values, noise, out=values)


def acquire(rng: np.random.Generator, anatomy_image: sitk.Image, acq: Acquisition,
            background_noise: bool = False) -> sitk.Image:
    """Resample once onto the native grid, then bias, Rician noise, scanner scale -> int16.

    Without `background_noise` the air stays exactly 0, as in skull-stripped exports; noise is
    then drawn only inside the brain, ~5x faster and ~5x smaller files. Skull-on scans have
    Rician noise in the air, as scanners write it."""
    native = sitk.Resample(anatomy_image, acq.grid, acq.pose, sitk.sitkLinear, 0.0,
                           sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(native)
    fx, fy, fz = _bias_profiles(rng, acq.grid.GetSize(), acq.bias_amplitude)
    gain = np.float32(acq.scale / 0.87)
    if background_noise:
        arr *= fz[:, None, None] * fy[None, :, None] * fx[None, None, :]
        values = _rician(rng, arr, acq.noise_sigma * 0.87)
        values *= gain
        values += np.float32(0.5)  # round half up on the int16 cast
        out_arr = np.minimum(values, 32767, out=values).astype(np.int16)
    else:
        flat = np.flatnonzero(arr > 0)
        k, j, i = np.unravel_index(flat, arr.shape)
        values = arr.ravel()[flat] * (fz[k] * fy[j] * fx[i])
        values = _rician(rng, values, acq.noise_sigma * 0.87)
        values *= gain
        values += np.float32(0.5)
        out_arr = np.zeros(arr.shape, np.int16)
        out_arr.ravel()[flat] = np.minimum(values, 32767).astype(np.int16)
    out = sitk.GetImageFromArray(out_arr)
    out.CopyInformation(acq.grid)
    return out


def dose_grid(rng: np.random.Generator, anat: Anatomy, pose: sitk.AffineTransform) -> sitk.Image:
    """The planning system's axis-aligned 2-3 mm grid in the post-op frame, over the head."""
    spacing = [(2.0, 2.0, 2.0), (2.5, 2.5, 2.5), (3.0, 3.0, 3.0), (2.5, 2.5, 3.0)][
        int(rng.integers(4))
    ]
    corners = _to_scanner(pose, _brain_corners(anat, 14.0))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = [int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing, strict=False)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(spacing)
    grid.SetOrigin(np.round(lo, 1).tolist())
    grid.SetDirection(np.eye(3).ravel().tolist())
    return grid


def to_grid(image: sitk.Image, grid: sitk.Image, pose: sitk.Transform,
            interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample an anatomy-frame map onto a scanner-frame grid (float32)."""
    return sitk.Resample(image, grid, pose, interpolator, 0.0, sitk.sitkFloat32)


def posed_copy(image: sitk.Image, angles_deg: Sequence[float], shift_mm: Sequence[float],
               pad_mm: float = 40.0) -> sitk.Image:
    """The same voxels after a rigid motion about the image centre, on a padded grid of the
    image's own direction and spacing (the anatomy moves in the world; nothing is cut off)."""
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    centre = image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist())
    motion = sitk.Euler3DTransform()  # new-grid point -> original point
    motion.SetCenter(centre)
    motion.SetRotation(*np.radians(angles_deg))
    motion.SetTranslation([float(t) for t in shift_mm])
    pad = np.ceil(pad_mm / spacing).astype(int)
    new_size = size + 2 * pad
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    new_centre = np.asarray(motion.GetInverse().TransformPoint(centre))
    origin = new_centre - direction @ (spacing * (new_size - 1) / 2.0)
    grid = sitk.Image([int(n) for n in new_size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin(origin.tolist())
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, motion, sitk.sitkLinear, 0.0)

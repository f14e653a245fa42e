"""Where the occlusion cube goes: sizes in voxels, cube positions per axis, and coverage.

A cube of `cube` voxels slides with `stride` voxels over the (z, y, x) grid. Edges where the
grid does not divide evenly: `shift` moves the last cube back inside the volume (MONAI's
sliding window), `clip` lets it hang over and truncates it (Captum). When
(size - cube) % stride == 0 on every axis both give the same positions, hence the same map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Cube = tuple[slice, ...]  # the cube's (z, y, x) slices
Job = tuple[int, Cube]  # (channel group index, cube slices): one occluded volume to run
Index = tuple[int | slice | list[int] | np.ndarray, ...]  # a numpy index built from parts


def mm_to_voxels(mm: float, spacing_zyx: Sequence[float]) -> tuple[int, ...]:
    """A length in mm as whole voxels per (z, y, x) axis (nearest, at least 1)."""
    return tuple(max(1, int(round(mm / float(s)))) for s in spacing_zyx)


def window_starts(size: int, cube: int, stride: int, edges: str = "shift") -> np.ndarray:
    """First voxel of every cube position along one axis."""
    cube = min(cube, size)
    if edges == "clip":  # Captum: ceil((size - cube) / stride) + 1 positions, the last truncated
        return np.arange(math.ceil((size - cube) / stride) + 1) * stride
    starts = list(range(0, size - cube + 1, stride))
    if starts[-1] + cube < size:  # MONAI: one more, moved back inside the volume
        starts.append(size - cube)
    return np.asarray(starts)


def coverage_counts(shape: Sequence[int], cube: Sequence[int], stride: Sequence[int],
                    edges: str = "shift") -> np.ndarray:
    """How many cube positions cover each voxel (separable: a product of per-axis counts)."""
    counts = []
    for n, c, s in zip(shape, cube, stride, strict=False):
        axis = np.zeros(n, np.float64)
        for a in window_starts(n, c, s, edges):
            axis[a:a + c] += 1
        counts.append(axis)
    return np.einsum("i,j,k->ijk", *counts)


def plan_jobs(volume: np.ndarray, groups: Sequence[Sequence[int]], cube: Sequence[int],
              stride: Sequence[int], fill: float, edges: str, brain_mask: np.ndarray | None,
              skip_unchanged: bool) -> tuple[list[Job], dict[str, int]]:
    """Every (group, cube slices) to run, and how many positions were skipped and why.

    Skipping is exact: a cube over voxels already equal to `fill` in every occluded channel
    leaves the input unchanged (sensitivity 0); outside the brain the prepared channels are 0.
    """
    shape = volume.shape[1:]
    starts = [window_starts(n, c, s, edges) for n, c, s in zip(shape, cube, stride, strict=False)]
    jobs: list[Job] = []
    total = skipped_fill = skipped_region = 0
    for g, chans in enumerate(groups):
        differs = np.any(volume[list(chans)] != np.float32(fill), axis=0)
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    sl = (slice(z, z + cube[0]), slice(y, y + cube[1]), slice(x, x + cube[2]))
                    total += 1
                    if skip_unchanged and not differs[sl].any():
                        skipped_fill += 1
                    elif brain_mask is not None and not brain_mask[sl].any():
                        skipped_region += 1
                    else:
                        jobs.append((g, sl))
    counts = {"total": total, "skipped_unchanged": skipped_fill,
              "skipped_outside_region": skipped_region, "run": len(jobs)}
    return jobs, counts

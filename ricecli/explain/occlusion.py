"""Occlusion sensitivity in model space, batched through an Engine, mapped onto the event scan.

Semantics (match Captum `Occlusion` and MONAI `OcclusionSensitivity`): a cube of `cube`
voxels slides with `stride` voxels over the (z, y, x) grid (`positions.py`); inside it the
occluded channels are set to `fill`; the sensitivity of one position is p(target | original) -
p(target | occluded); a voxel's value is the mean over all cube positions covering it.
Positions that cannot change the input (or miss the brain) are skipped exactly: they count as 0.

Exact incremental inference (default with ONNX Runtime on the CPU): per position only what the
cube can change is recomputed (`incremental/`); `incremental=False` runs whole volumes.
The core (`occlusion_maps`) needs only numpy and an Engine; `maps.py` meets scan geometry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ricecli.errors import RicenetError
from ricecli.explain.incremental import IncrementalNetwork, incremental_for
from ricecli.explain.maps import peak_point, peak_value, to_event_grid
from ricecli.explain.positions import (
    Index,
    Job,
    coverage_counts,
    mm_to_voxels,
    plan_jobs,
)
from ricecli.inference.calibration import calibrated_mean

if TYPE_CHECKING:
    import SimpleITK as sitk

    from ricecli.inference.engine import Engine
    from ricecli.inference.model import LoadedModel
    from ricecli.prepare import PreparedCase
    from ricecli.spec import Calibration

TARGETS = ("recurrence", "RICE", "predicted")
EDGES = ("shift", "clip")
CHANNEL_MODES = ("all", "each")
REGIONS = ("brain", "all")
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class OcclusionSettings:
    """What `ricecli explain` lets a user choose; sizes in mm, converted with the spec spacing."""

    cube_mm: float = 16.0
    stride_mm: float = 16.0
    fill: float = 0.0
    channels: str = "all"
    target: str = "recurrence"
    batch: int = 16
    region: str = "brain"
    edges: str = "shift"
    skip_unchanged: bool = True
    incremental: bool = True

    def check(self) -> OcclusionSettings:
        """Raise a one-line usage error for values that cannot work."""
        for name, value, allowed in (("channels", self.channels, CHANNEL_MODES),
                                     ("target", self.target, TARGETS),
                                     ("region", self.region, REGIONS),
                                     ("edges", self.edges, EDGES)):
            if value not in allowed:
                raise RicenetError(f"--{name} {value!r} is not known",
                                   fix=f"use one of {', '.join(allowed)}")
        if not (self.cube_mm > 0 and self.stride_mm > 0):
            raise RicenetError("--cube-mm and --stride-mm must be positive",
                               fix="e.g. --cube-mm 16 --stride-mm 16")
        if self.batch < 1:
            raise RicenetError("--batch must be at least 1", fix="e.g. --batch 16")
        if not math.isfinite(self.fill):
            raise RicenetError("--fill must be a finite number", fix="e.g. --fill 0")
        return self


@dataclass
class OcclusionMaps:
    """Model-space sensitivity maps (z, y, x) and what it took to make them."""

    maps: dict[str, np.ndarray]  # "all" (channels occluded together) [+ one per channel name]
    p_original: np.ndarray  # [2] probabilities of the unoccluded input
    target_index: int
    cube_vox: tuple[int, ...]
    stride_vox: tuple[int, ...]
    positions: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    method: str = "plain"  # "incremental-stem", "incremental-layers (...)" or "plain (<why>)"


def _probabilities(engine: Engine, volumes: np.ndarray,
                   calibration: Calibration | None = None) -> np.ndarray:
    """Calibrated mean probabilities [N, 2] from an Engine (`run` -> (probs, members))."""
    probs, members = engine.run(np.ascontiguousarray(volumes, dtype=np.float32))
    return calibrated_mean(probs, members, calibration)


def _target_index(target: str | int, classes: Sequence[str], p_original: np.ndarray) -> int:
    """The class index whose probability drop is mapped."""
    if isinstance(target, int):
        return target
    if target == "predicted":
        return int(np.argmax(p_original))
    if target not in classes:
        raise RicenetError(f"target {target!r} is not one of the model's classes {list(classes)}",
                           fix="use --target recurrence, RICE or predicted")
    return list(classes).index(target)


def _whole_volumes(engine: Engine, volume: np.ndarray, groups: list[list[int]],
                   jobs: list[Job], fill: float,
                   batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(mean, members) per batch of occluded copies of the whole volume (the plain path)."""
    for first in range(0, len(jobs), batch):
        occluded = np.repeat(volume[None], len(jobs[first:first + batch]), axis=0)
        for i, (g, sl) in enumerate(jobs[first:first + batch]):
            inside: Index = (i, groups[g], *sl)
            occluded[inside] = fill
        yield engine.run(occluded)


def occlusion_maps(volume: np.ndarray, engine: Engine, channel_names: Sequence[str],
                   cube_vox: Sequence[int], stride_vox: Sequence[int], *, fill: float = 0.0,
                   channels: str = "all", target: str | int = "recurrence",
                   classes: Sequence[str] = ("RICE", "recurrence"), batch: int = 16,
                   edges: str = "shift", brain_mask: np.ndarray | None = None,
                   skip_unchanged: bool = True, progress: Progress | None = None,
                   incremental: IncrementalNetwork | None = None, method: str = "plain",
                   calibration: Calibration | None = None) -> OcclusionMaps:
    """Occlusion sensitivity of `volume` [C, z, y, x] through `engine` (see the module doc).

    `incremental`: an `IncrementalNetwork` of the same model; positions then run incrementally.
    `calibration`: the model's; p is then the calibrated p every other output shows.
    """
    t0 = time.perf_counter()
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    shape = volume.shape[1:]
    cube = tuple(min(int(c), n) for c, n in zip(cube_vox, shape, strict=False))
    stride = tuple(int(s) for s in stride_vox)
    names, groups = ["all"], [list(range(volume.shape[0]))]
    if channels == "each":  # the all-channel map too: occlusion.nii.gz is always that one
        names += list(channel_names)
        groups += [[c] for c in range(volume.shape[0])]
    p_original = _probabilities(engine, volume[None], calibration)[0]
    t_index = _target_index(target, classes, p_original)
    jobs, counts = plan_jobs(volume, groups, cube, stride, fill, edges, brain_mask,
                             skip_unchanged)
    sums = np.zeros((len(groups), *shape), np.float64)
    t1 = time.perf_counter()

    def run(todo: list[Job]) -> Iterator[np.ndarray]:
        """Sensitivity of each job, per batch."""
        if incremental is not None:
            batches = incremental.batches(volume, [(groups[g], sl) for g, sl in todo], fill,
                                          batch)
        else:
            batches = _whole_volumes(engine, volume, groups, todo, fill, batch)
        for probs, members in batches:
            yield p_original[t_index] - calibrated_mean(probs, members, calibration)[:, t_index]

    values: list[float] = []
    for sens in run(jobs):
        values += list(sens)
        if progress is not None:
            progress(len(values), len(jobs))
    for (g, sl), value in zip(jobs, values, strict=True):
        covered: Index = (g, *sl)
        sums[covered] += value
    cover = coverage_counts(shape, cube, stride, edges)
    mean = np.divide(sums, cover, out=np.zeros_like(sums), where=cover > 0).astype(np.float32)
    t2 = time.perf_counter()
    return OcclusionMaps(
        maps={n: mean[i] for i, n in enumerate(names)}, p_original=p_original,
        target_index=t_index, cube_vox=cube, stride_vox=stride, positions=counts,
        seconds={"plan": round(t1 - t0, 4), "run": round(t2 - t1, 4),
                 "volumes_per_s": round(len(jobs) / max(t2 - t1, 1e-9), 3)},
        method=incremental.method if incremental is not None else method,
    )


@dataclass
class ExplainResult:
    """Maps on the event grid plus everything explain.json records."""

    event_maps: dict[str, sitk.Image]
    model_maps: OcclusionMaps
    settings: OcclusionSettings
    target: str
    probabilities: dict[str, float]
    peak_index_xyz: tuple[int, int, int]
    peak_mm: tuple[float, float, float]
    seconds: dict[str, float]

    def summary(self, classes: Sequence[str]) -> dict[str, object]:
        """The JSON-ready record of this explanation."""
        m = self.model_maps
        return {
            "settings": asdict(self.settings),
            "cube_voxels_zyx": list(m.cube_vox), "stride_voxels_zyx": list(m.stride_vox),
            "target": self.target, "probabilities": self.probabilities,
            "target_probability": self.probabilities[self.target],
            "positions": m.positions, "method": m.method, "timings_s": self.seconds,
            "volumes_per_s": m.seconds.get("volumes_per_s"),
            "peak": {"index_xyz": list(self.peak_index_xyz), "world_lps_mm": list(self.peak_mm),
                     "value": peak_value(self.event_maps["all"], self.peak_index_xyz)},
            "maps": sorted(self.event_maps), "classes": list(classes),
        }


def explain_case(case: PreparedCase, model: LoadedModel, engine: Engine,
                 settings: OcclusionSettings = OcclusionSettings(),
                 progress: Progress | None = None) -> ExplainResult:
    """Occlusion maps of a PreparedCase through `engine`, resampled onto its event scan."""
    from ricecli.prepare import to_tensor

    settings.check()
    spec = model.spec
    t0 = time.perf_counter()
    volume = to_tensor(case, spec)
    spacing_zyx = tuple(reversed(spec.model_space.spacing_mm))
    cube = mm_to_voxels(settings.cube_mm, spacing_zyx)
    stride = mm_to_voxels(settings.stride_mm, spacing_zyx)
    mask = np.asarray(case.brain_mask) > 0 if settings.region == "brain" else None
    stem, method = incremental_for(model, engine, settings.incremental)
    maps = occlusion_maps(volume, engine, spec.channels, cube, stride, fill=settings.fill,
                          channels=settings.channels, target=settings.target,
                          classes=spec.classes, batch=settings.batch, edges=settings.edges,
                          brain_mask=mask, skip_unchanged=settings.skip_unchanged,
                          progress=progress, incremental=stem, method=method,
                          calibration=spec.calibration)
    t1 = time.perf_counter()
    event_maps = {name: to_event_grid(arr, case.reference, case.event_image, case.model_to_event)
                  for name, arr in maps.maps.items()}
    index, point = peak_point(event_maps["all"])
    t2 = time.perf_counter()
    return ExplainResult(
        event_maps=event_maps, model_maps=maps, settings=settings,
        target=spec.classes[maps.target_index],
        probabilities={c: float(p) for c, p in zip(spec.classes, maps.p_original, strict=False)},
        peak_index_xyz=index, peak_mm=point,
        seconds={"occlusion": round(t1 - t0, 3), "resample_to_event": round(t2 - t1, 3),
                 **{f"occlusion_{k}": v for k, v in maps.seconds.items() if k != "volumes_per_s"}},
    )

"""Occlusion sensitivity in model space, batched through an Engine, mapped onto the event scan.

Semantics (match Captum `Occlusion` and MONAI `OcclusionSensitivity`): a cube of `cube`
voxels slides with `stride` voxels over the (z, y, x) grid; inside it the occluded channels
are set to `fill`; the sensitivity of one position is p(target | original) - p(target |
occluded); a voxel's value is the mean over all cube positions covering it. Edges where the
grid does not divide evenly: `shift` moves the last cube back inside the volume (MONAI's
sliding window), `clip` lets it hang over and truncates it (Captum). When
(size - cube) % stride == 0 on every axis both give the same positions, hence the same map.

Exact savings: a position whose cube covers only voxels already equal to `fill` in every
occluded channel leaves the input unchanged, so its sensitivity is exactly 0: it is not run but
still counts in the average. `region="brain"` also skips positions whose cube misses the brain
(exact too when the channels equal `fill` outside the brain, as prepared channels do for 0).

Exact incremental inference (default with ONNX Runtime on the CPU, Krypton-style): the local
layers run once on the original volume; per position only the window each layer's output can
change is recomputed, up to a depth chosen by measured cost, then the rest of the network runs
on whole tensors (`ricecli/explain/incremental.py`). `incremental=False` runs whole volumes.

The core (`occlusion_maps`) needs only numpy and an Engine; SimpleITK is imported where the
maps meet scan geometry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ricecli.errors import RicenetError

if TYPE_CHECKING:
    import SimpleITK as sitk

TARGETS = ("recurrence", "RICE", "predicted")
EDGES = ("shift", "clip")
CHANNEL_MODES = ("all", "each")
REGIONS = ("brain", "all")


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


@dataclass
class OcclusionMaps:
    """Model-space sensitivity maps (z, y, x) and what it took to make them."""

    maps: dict[str, np.ndarray]  # "all" (channels occluded together) [+ one per channel name]
    p_original: np.ndarray  # [2] probabilities of the unoccluded input
    target_index: int
    cube_vox: tuple[int, int, int]
    stride_vox: tuple[int, int, int]
    positions: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    method: str = "plain"  # "incremental-stem", "incremental-layers (...)" or "plain (<why>)"


def _probabilities(engine, volumes: np.ndarray) -> np.ndarray:
    """Mean probabilities [N, 2] from an Engine (`run` -> (probs, members))."""
    probs, _members = engine.run(np.ascontiguousarray(volumes, dtype=np.float32))
    return np.asarray(probs, dtype=np.float64)


def _target_index(target: str | int, classes: Sequence[str], p_original: np.ndarray) -> int:
    if isinstance(target, int):
        return target
    if target == "predicted":
        return int(np.argmax(p_original))
    if target not in classes:
        raise RicenetError(f"target {target!r} is not one of the model's classes {list(classes)}",
                           fix="use --target recurrence, RICE or predicted")
    return list(classes).index(target)


def _jobs(volume: np.ndarray, groups: list[list[int]], cube: tuple[int, ...],
          stride: tuple[int, ...], fill: float, edges: str, brain_mask: np.ndarray | None,
          skip_unchanged: bool) -> tuple[list[tuple[int, tuple[slice, ...]]], dict[str, int]]:
    """Every (group, cube slices) to run, and how many positions were skipped and why."""
    shape = volume.shape[1:]
    starts = [window_starts(n, c, s, edges) for n, c, s in zip(shape, cube, stride, strict=False)]
    jobs: list[tuple[int, tuple[slice, ...]]] = []
    total = skipped_fill = skipped_region = 0
    for g, chans in enumerate(groups):
        differs = np.any(volume[chans] != np.float32(fill), axis=0)
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


def _whole_volumes(engine, volume, groups, jobs, fill, batch):
    """(mean, members) per batch of occluded copies of the whole volume (the plain path)."""
    for first in range(0, len(jobs), batch):
        occluded = np.repeat(volume[None], len(jobs[first:first + batch]), axis=0)
        for i, (g, sl) in enumerate(jobs[first:first + batch]):
            occluded[(i, groups[g], *sl)] = fill
        yield engine.run(occluded)


def occlusion_maps(volume: np.ndarray, engine, channel_names: Sequence[str],
                   cube_vox: Sequence[int], stride_vox: Sequence[int], *, fill: float = 0.0,
                   channels: str = "all", target: str | int = "recurrence",
                   classes: Sequence[str] = ("RICE", "recurrence"), batch: int = 16,
                   edges: str = "shift", brain_mask: np.ndarray | None = None,
                   skip_unchanged: bool = True,
                   progress: Callable[[int, int], None] | None = None,
                   incremental=None, method: str = "plain",
                   approximate: float | None = None) -> OcclusionMaps:
    """Occlusion sensitivity of `volume` [C, z, y, x] through `engine` (see the module doc).

    `incremental`: an `IncrementalNetwork` of the same model; positions then run incrementally.
    `approximate` (off by default; NOT exact): Krypton-style adaptive drill-down. Every other
    position per axis runs first (a grid at twice the stride); then only the positions next to
    the strongest `approximate` fraction of those run; every other position takes the value of
    its coarse neighbour (`drill_down`).
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
    p_original = _probabilities(engine, volume[None])[0]
    t_index = _target_index(target, classes, p_original)
    jobs, counts = _jobs(volume, groups, cube, stride, fill, edges, brain_mask, skip_unchanged)
    sums = np.zeros((len(groups), *shape), np.float64)
    t1 = time.perf_counter()

    def run(todo: list) -> Iterator[np.ndarray]:
        """Sensitivity of each job, per batch."""
        if incremental is not None:
            batches = incremental.batches(volume, [(groups[g], sl) for g, sl in todo], fill,
                                          batch)
        else:
            batches = _whole_volumes(engine, volume, groups, todo, fill, batch)
        for probs, _members in batches:
            yield p_original[t_index] - np.asarray(probs, np.float64)[:, t_index]

    if approximate is not None:
        starts = [window_starts(n, c, st, edges) for n, c, st in zip(shape, cube, stride,
                                                                      strict=False)]
        values, ran = drill_down(jobs, starts, approximate, run, progress)
        counts = {**counts, "approximate_run": ran}
        suffix = f" + approximate drill-down (top {approximate:.0%})"
    else:
        suffix, values, done = "", [], 0
        for sens in run(jobs):
            values += list(sens)
            done += len(sens)
            if progress is not None:
                progress(done, len(jobs))
    for (g, sl), value in zip(jobs, values, strict=True):
        sums[(g, *sl)] += value
    cover = coverage_counts(shape, cube, stride, edges)
    mean = np.divide(sums, cover, out=np.zeros_like(sums), where=cover > 0).astype(np.float32)
    t2 = time.perf_counter()
    return OcclusionMaps(
        maps={n: mean[i] for i, n in enumerate(names)}, p_original=p_original,
        target_index=t_index, cube_vox=cube, stride_vox=stride, positions=counts,
        seconds={"plan": round(t1 - t0, 4), "run": round(t2 - t1, 4),
                 "volumes_per_s": round(len(jobs) / max(t2 - t1, 1e-9), 3)},
        method=(incremental.method if incremental is not None else method) + suffix,
    )


def drill_down(jobs: list, starts: Sequence[np.ndarray], fraction: float, run,
               progress: Callable[[int, int], None] | None = None) -> tuple[list[float], int]:
    """Approximate sensitivities of `jobs` (group, cube slices): coarse grid, then refine.

    Coarse: positions whose grid index is even on every axis (exact values). Refined: every
    position within one grid step of the strongest `fraction` of the coarse ones (per channel
    group, by |sensitivity|; exact values). Others: their coarse neighbour's value (grid index
    rounded down to even); positions whose coarse neighbour did not run are run too.
    Returns (values, positions run).
    """
    index = np.asarray([[int(np.searchsorted(a, s.start)) for a, s in zip(starts, sl,
                                                                           strict=False)]
                        for _, sl in jobs], np.int64).reshape(-1, 3)
    group = np.asarray([g for g, _ in jobs], np.int64)
    coarse = np.flatnonzero((index % 2 == 0).all(axis=1))
    values = np.zeros(len(jobs), np.float64)
    done = 0

    def fill_in(which: np.ndarray) -> None:
        nonlocal done
        at = 0
        for sens in run([jobs[i] for i in which]):
            values[which[at:at + len(sens)]] = sens
            at += len(sens)
            done += len(sens)
            if progress is not None:
                progress(done, len(jobs))

    fill_in(coarse)
    chosen = []
    for g in np.unique(group):
        mine = coarse[group[coarse] == g]
        keep = int(np.ceil(fraction * len(mine)))
        chosen += list(mine[np.argsort(-np.abs(values[mine]), kind="stable")[:keep]])
    hot = {(int(group[i]), *index[i]) for i in chosen}
    steps = [np.asarray(d) - 1 for d in np.ndindex(3, 3, 3)]
    is_coarse = set(coarse.tolist())
    ran_coarse = {(int(group[i]), *index[i]) for i in coarse}
    near = [i for i in range(len(jobs)) if i not in is_coarse
            and (any((int(group[i]), *(index[i] + d)) in hot for d in steps)
                 or (int(group[i]), *(index[i] // 2 * 2)) not in ran_coarse)]
    fill_in(np.asarray(near, np.int64))
    ran = is_coarse | set(near)
    by_key = {(int(group[i]), *index[i]): values[i] for i in coarse}
    for i in range(len(jobs)):
        if i not in ran:
            values[i] = by_key.get((int(group[i]), *(index[i] // 2 * 2)), 0.0)
    return values.tolist(), len(ran)


_STEMS: dict[tuple, tuple] = {}


def incremental_for(model, engine, wanted: bool = True, depth: int | None = None):
    """(IncrementalNetwork or None, method label): incremental on ONNX Runtime CPU models only.

    depth: None = chosen by measured cost; 1 = the stem only; larger = that many layer depths.
    """
    threads = getattr(engine, "threads", None)
    key = (str(getattr(model, "path", "")), getattr(model, "sha256", ""), threads, wanted,
           getattr(engine, "name", ""), depth)
    if key not in _STEMS:
        _STEMS[key] = _open_incremental(model, engine, wanted, threads, depth)
    return _STEMS[key]


def _open_incremental(model, engine, wanted: bool, threads: int | None, depth: int | None):
    if not wanted:
        return None, "plain (incremental off)"
    if getattr(model, "format", None) != "onnx" or getattr(engine, "name", "") \
            != "onnxruntime-cpu":
        return None, f"plain (engine {getattr(engine, 'name', '?')})"
    from ricecli.explain.incremental import IncrementalNetwork
    from ricecli.inference.engine import physical_cores

    try:
        runner = IncrementalNetwork.open(model.path, threads or physical_cores(), depth)
    except ImportError as err:  # the onnx package is missing
        return None, f"plain ({err})"
    if isinstance(runner, str):
        return None, f"plain ({runner})"
    return runner, "incremental"


def rich_progress(description: str = "occlusion"):
    """A (callback, context manager) pair: a rich progress bar with ETA on stderr."""
    from ricecli.progress import progress_bar

    bar = progress_bar(transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar


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
    out = sitk.Resample(map_image(values_zyx, reference), event_image, event_to_model,
                        sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return out


def peak_point(image: sitk.Image) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Index (x, y, z) and world LPS mm of the map's strongest voxel (largest value)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(image)
    flat = int(np.argmax(arr)) if arr.max() > 0 else int(np.argmax(np.abs(arr)))
    z, y, x = np.unravel_index(flat, arr.shape)
    index = (int(x), int(y), int(z))
    return index, tuple(float(v) for v in image.TransformIndexToPhysicalPoint(index))


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

    def summary(self, classes: Sequence[str]) -> dict:
        """The JSON-ready record of this explanation."""
        import SimpleITK as sitk

        m = self.model_maps
        return {
            "settings": asdict(self.settings),
            "cube_voxels_zyx": list(m.cube_vox), "stride_voxels_zyx": list(m.stride_vox),
            "target": self.target, "probabilities": self.probabilities,
            "target_probability": self.probabilities[self.target],
            "positions": m.positions, "method": m.method, "timings_s": self.seconds,
            "volumes_per_s": m.seconds.get("volumes_per_s"),
            "peak": {"index_xyz": list(self.peak_index_xyz), "world_lps_mm": list(self.peak_mm),
                     "value": float(sitk.GetArrayViewFromImage(self.event_maps["all"])[
                         self.peak_index_xyz[::-1]])},
            "maps": sorted(self.event_maps), "classes": list(classes),
        }


def explain_case(case, model, engine, settings: OcclusionSettings = OcclusionSettings(),
                 progress: Callable[[int, int], None] | None = None) -> ExplainResult:
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
                          progress=progress, incremental=stem, method=method)
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


def write_explain(result: ExplainResult, case, folder, classes: Sequence[str],
                  extra: dict | None = None) -> dict:
    """Write occlusion[_<channel>].nii.gz, overview.png and explain.json into `folder`."""
    import json
    from pathlib import Path

    import SimpleITK as sitk

    from ricecli.outputs.overview import write_overview

    folder = Path(folder)
    for name, img in result.event_maps.items():
        stem = "occlusion" if name == "all" else f"occlusion_{name}"
        sitk.WriteImage(img, str(folder / f"{stem}.nii.gz"), True)
    write_overview(case.event_image, result.event_maps["all"], folder / "overview.png",
                   result.peak_mm,
                   title=f"p({result.target}) = {result.probabilities[result.target]:.3f}   "
                         f"occlusion sensitivity for {result.target}")
    record = {**result.summary(classes), **(extra or {})}
    (folder / "explain.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record

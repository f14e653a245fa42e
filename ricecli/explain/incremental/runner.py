"""The incremental runner: probabilities of many occluded copies of one volume, exactly.

The local layers run once on the original volume (`base`); per position only the windows up to
a depth run (`layers.py`); at the cut each window is pasted into a copy of the cached
activation and the trunk runs on whole tensors. Chunks of positions go to `threads` workers,
each with its own single-threaded sessions (data parallelism beats ORT's intra-op threads on
these small convs); results come back in order, so the bits do not depend on which worker
finishes first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.explain.incremental.depth import Costs, choose_depth
from ricecli.explain.incremental.graph import NetworkSplit, analyse
from ricecli.explain.incremental.layers import PaddedInputs, padded_inputs, window_values
from ricecli.explain.incremental.subgraphs import base_bytes, cut_tensors, layer_bytes, trunk_bytes
from ricecli.explain.incremental.windows import Occlusion, paste, plan_windows
from ricecli.runtime import cpu_session

if TYPE_CHECKING:
    import onnxruntime as ort

TRUNK_BATCH_BYTES = 256 << 20  # trunk input bytes per call (the cut tensors of a batch)
DELTA_CHUNK_POSITIONS = 64  # positions per windowed-layer call (the fixed-size window batch)
WINDOW_CHUNK_BYTES = 1 << 30  # window values of one chunk, all workers together, at most
Probabilities = tuple[np.ndarray, np.ndarray]  # (mean [n, 2], members [n, M, 2])


class IncrementalNetwork:
    """Probabilities of occluded copies of one volume, layers run on windows up to a depth."""

    def __init__(self, split: NetworkSplit, threads: int, depth: int | None = None):
        self.split = split
        self.threads = threads
        self.fixed_depth = depth
        self.depth: int | None = None
        self.costs: Costs = {}
        self.workers = max(1, threads)  # single-threaded session sets, one chunk each at a time
        self._layers: dict[tuple[int, int], ort.InferenceSession] = {}
        self._trunks: dict[tuple[int, int], ort.InferenceSession] = {}
        self._base = cpu_session(base_bytes(split, [op.output for op in split.ops]), threads,
                                 spin=False)
        # one volume's activations (by volume hash) and its padded layer inputs (per geometry)
        self._last: tuple[str, dict[str, np.ndarray]] | None = None
        self._padded: dict[tuple[int, str], PaddedInputs] = {}

    @classmethod
    def from_model(cls, model_path: str | Path, threads: int,
             depth: int | None = None) -> IncrementalNetwork | str:
        """The incremental runner for a model file, or the reason it does not apply."""
        split = analyse(model_path)
        if isinstance(split, str):
            return split
        if depth is not None:
            depth = min(depth, split.max_depth)
        return cls(split, threads, depth)

    def _layer(self, d: int, worker: int = 0) -> ort.InferenceSession:
        """The session of depth d's windowed layers (built on first use, one per worker)."""
        key = (d, worker)
        if key not in self._layers:
            ops = [op for op in self.split.ops if op.depth == d and op.windowed]
            self._layers[key] = cpu_session(layer_bytes(self.split, ops), 1, spin=False)
        return self._layers[key]

    def _trunk(self, depth: int, worker: int = 0) -> ort.InferenceSession:
        """The session of the rest of the network after depth `depth` (one per worker)."""
        if (depth, worker) not in self._trunks:
            out = trunk_bytes(self.split, cut_tensors(self.split, depth))
            if isinstance(out, str):
                raise ValueError(out)
            self._trunks[(depth, worker)] = cpu_session(out, 1, spin=False)
        return self._trunks[(depth, worker)]

    @property
    def method(self) -> str:
        """The label explain.json records."""
        if self.depth is None:
            return "incremental"
        if self.depth == 1:
            return "incremental-stem"
        n = sum(op.windowed for op in self.split.at_most(self.depth))
        return f"incremental-layers (depth {self.depth}: {n} conv/pool layers on windows)"

    def base(self, volume: np.ndarray) -> dict[str, np.ndarray]:
        """Every local tensor [C, z, y, x] of the unoccluded volume [C, z, y, x] (the last
        volume's are kept: explain and benchmarks call again with the same volume)."""
        key = f"{volume.shape}:{hashlib.sha1(volume.tobytes()).hexdigest()}"
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        names = [op.output for op in self.split.ops]
        outs = self._base.run(names, {INPUT_NAME: volume[None]})
        acts = {n: np.asarray(o[0], np.float32) for n, o in zip(names, outs, strict=True)}
        acts[INPUT_NAME] = volume.copy()
        self._last = (key, acts)
        self._padded = {}
        return acts

    def batches(self, volume: np.ndarray, occlusions: Sequence[Occlusion], fill: float,
                batch: int) -> Iterator[Probabilities]:
        """(mean [n, 2], members [n, M, 2]) per `batch` occlusions (channels, cube slices)."""
        volume = np.ascontiguousarray(volume, np.float32)
        acts = self.base(volume)
        shapes = {k: v.shape for k, v in acts.items()}
        windows = plan_windows(self.split.ops, shapes, [sl for _, sl in occlusions])
        depth = self.fixed_depth
        if not depth:
            depth, self.costs = choose_depth(self.split, acts, windows)
        self.depth = depth
        ops = self.split.at_most(depth)
        cut = cut_tensors(self.split, depth)
        pkey = (depth, json.dumps(sorted((k, list(v)) for k, v in windows.sizes.items())))
        if pkey not in self._padded:  # kept with the base activations of this volume
            self._padded[pkey] = padded_inputs(acts, ops, windows)
        padded = self._padded[pkey]
        per_pos = sum(acts[c].nbytes for c in cut)
        batch = max(1, min(batch, TRUNK_BATCH_BYTES // max(per_pos * self.workers, 1)))
        window_bytes = sum(4 * acts[op.output].shape[0] * int(np.prod(windows.sizes[op.output]))
                           for op in ops)  # per position, all windows at once (the worst case)
        fits = max(1, WINDOW_CHUNK_BYTES // max(window_bytes * self.workers, 1))
        chunk = batch * max(1, min(DELTA_CHUNK_POSITIONS, fits) // batch)
        chunk = max(1, min(chunk, -(-len(occlusions) // self.workers)))  # every worker busy

        def work(worker: int, idx: np.ndarray) -> list[Probabilities]:
            """One chunk of positions on one worker's sessions, trunk batch by trunk batch."""
            vals = window_values(self.split, lambda d: self._layer(d, worker), volume,
                                 acts, padded, ops, windows, idx,
                                 [occlusions[i] for i in idx], fill)
            trunk, out = self._trunk(depth, worker), []
            for i in range(0, len(idx), batch):
                part = idx[i:i + batch]
                feeds = {}
                for name in cut:
                    full = np.repeat(acts[name][None], len(part), axis=0)
                    paste(full, np.zeros((len(part), 3), np.int64), vals[name][i:i + batch],
                          windows.starts[name][part])
                    feeds[name] = full
                probs, members = trunk.run(list(OUTPUT_NAMES), feeds)
                out.append((probs, members))
            return out

        chunks = [np.arange(a, min(a + chunk, len(occlusions)))
                  for a in range(0, len(occlusions), chunk)]
        if self.workers == 1 or len(chunks) == 1:
            for idx in chunks:
                yield from work(0, idx)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:  # ORT runs without the GIL
            for first in range(0, len(chunks), self.workers):
                group = chunks[first:first + self.workers]
                futures = [pool.submit(work, w, idx) for w, idx in enumerate(group)]
                for future in futures:  # in order: the same bits whatever finishes first
                    yield from future.result()

    def probabilities(self, volume: np.ndarray, occlusions: Sequence[Occlusion],
                      fill: float, batch: int = 16) -> Probabilities:
        """(mean [N, 2], members [N, M, 2]) of all occlusions, as the full model would give."""
        parts = list(self.batches(volume, occlusions, fill, batch))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


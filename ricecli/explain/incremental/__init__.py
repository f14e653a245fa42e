"""Exact incremental occlusion (Krypton-style): recompute only what a cube can change.

An occlusion cube changes the input in a small box; through the local layers (conv, max-pool,
ReLU, batch norm, the residual add) the change stays inside a box that grows by each layer's
reach. Per position only those boxes ("windows") are recomputed, up to a depth chosen by
counted work; the rest of the network (the trunk) runs on whole tensors. Read in this order:
`graph` (which layers are local, their depth and reach), `windows` (the boxes), `layers` (the
exact recompute), `subgraphs` (the ONNX Runtime graphs and sessions; `slices`: 3D convs as 2D),
`depth` (the counted choice), `runner` (`IncrementalNetwork`). Needs the `onnx` package (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ricecli.explain.incremental.runner import IncrementalNetwork
from ricecli.memo import process_cache
from ricecli.runtime import physical_cores

if TYPE_CHECKING:
    from ricecli.inference.engine import Engine
    from ricecli.inference.model import LoadedModel

__all__ = ["IncrementalNetwork", "incremental_for"]

Choice = tuple[IncrementalNetwork | None, str]  # (runner or None for the plain path, label)


def incremental_for(model: LoadedModel, engine: Engine, wanted: bool = True,
                    depth: int | None = None) -> Choice:
    """(IncrementalNetwork or None, method label): incremental on ONNX Runtime CPU models only.

    depth: None = chosen by counted work; 1 = the stem only; larger = that many layer depths.
    One per model, engine kind, threads and depth per process: its sessions and the last
    volume's activations are reused by every explain of the process.
    """
    return _open(model, engine.name, getattr(engine, "threads", None), wanted, depth)


@process_cache()
def _open(model: LoadedModel, engine_name: str, threads: int | None, wanted: bool,
          depth: int | None) -> Choice:
    """The runner, or None and why the plain path runs instead."""
    if not wanted:
        return None, "plain (incremental off)"
    if engine_name != "onnxruntime-cpu":
        return None, f"plain (engine {engine_name})"
    try:
        runner = IncrementalNetwork.from_model(model.path, threads or physical_cores(), depth)
    except ImportError as err:  # the onnx package is missing
        return None, f"plain ({err})"
    if isinstance(runner, str):
        return None, f"plain ({runner})"
    return runner, "incremental"

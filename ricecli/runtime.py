"""The one place ONNX Runtime sessions get their settings: the classifier's engine, model
loading, the incremental occlusion layers, brain extraction and the benchmarks all use it.

onnxruntime is imported inside the functions: the CLI starts without it and a missing build
is a one-line error naming the extra to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from ricecli.errors import RicenetError

CPU_EP = "CPUExecutionProvider"
ORT_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
              "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")


def import_onnxruntime() -> ModuleType:
    """The onnxruntime module, or a one-line error naming the build to install."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise RicenetError(f"ONNX Runtime is not installed or broken ({err})",
                           fix="pip install 'ricecli[cpu]', or 'ricecli[gpu]' on a machine with "
                           "an NVIDIA GPU (one of the two, never both)") from None
    return ort


def cache_root() -> Path:
    """Where ricenet keeps what it builds (TensorRT engines, training's prepared cases):
    $RICENET_CACHE, else $XDG_CACHE_HOME/ricenet, else ~/.cache/ricenet. An empty variable
    counts as unset (it never means the working directory)."""
    if os.environ.get("RICENET_CACHE"):
        return Path(os.environ["RICENET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ricenet"


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's FPU)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def session_options(threads: int | None = None, spin: bool = True,
                    optimize: bool = True) -> Any:
    """ORT session options: all graph optimisations (none with optimize=False, enough to read
    a model's I/O), `threads` intra-op threads (default: the physical cores), sequential,
    warnings only. spin=False: idle threads do not spin and steal another session's cores."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if not optimize:
        return opts
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def cpu_session(source: str | Path | bytes, threads: int | None = None,
                spin: bool = True) -> Any:
    """An ONNX Runtime CPU session on a model file or its bytes, with session_options."""
    ort = import_onnxruntime()
    model = str(source) if isinstance(source, Path) else source
    return ort.InferenceSession(model, session_options(threads, spin), providers=[CPU_EP])


def onnxruntime_builds() -> list[str]:
    """The ONNX Runtime distributions installed. All of them install the same `onnxruntime/`
    folder, so with two the files of whichever came last win, one by one."""
    from importlib import metadata

    found = []
    for dist in ORT_BUILDS:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return found

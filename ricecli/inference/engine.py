"""Inference engines behind one small interface: `run(volumes[N,C,D,H,W]) -> (probs, members)`.

Implementations: ONNX Runtime (onnx.py; CPU, or CUDA / TensorRT execution providers when
onnxruntime-gpu is installed) and a native TensorRT `.engine` (tensorrt.py). `open_engine`
applies the provider policy: CPU for `cpu`; CUDA for `cuda` and, when it really loads, for
`auto`; ORT's TensorRT provider only for `tensorrt`. A fallback is said in one line on stderr
and kept in `engine.fallback`; a GPU that was asked for and cannot run is a one-line
RicenetError with a fix (exit 2).
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

import numpy as np

from ricecli.errors import RicenetError
from ricecli.inference.gpu import (
    CUDA_EP,
    TRT_EP,
    ProviderError,
    gpu_identity,
    label,
    not_loaded,
    preload_gpu_libraries,
    providers_for,
)
from ricecli.inference.model import LoadedModel
from ricecli.inference.onnx import OnnxRuntimeEngine
from ricecli.inference.tensorrt import TensorRTEngine
from ricecli.memo import Memo
from ricecli.runtime import CPU_EP, import_onnxruntime, onnxruntime_builds

__all__ = ["DEVICES", "Engine", "OnnxRuntimeEngine", "TensorRTEngine", "available_engines",
           "describe", "forget_engines", "open_engine"]

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


@runtime_checkable
class Engine(Protocol):
    """What every engine offers: a name, the providers it runs on, and batched inference."""

    name: str
    providers: list[str]
    max_batch: int

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        ...


EngineKey = tuple[str, str, str]  # model path, model sha256, device
ENGINES: Memo[EngineKey, Engine] = Memo(
    "engines", "one engine per model and device: a session is slow to create and a GPU one "
    "holds device memory")


def available_engines() -> dict[str, bool]:
    """Which engines this machine can run (ORT providers and native TensorRT)."""
    ort = import_onnxruntime()
    have = set(ort.get_available_providers())
    return {
        "onnxruntime-cpu": CPU_EP in have,
        "onnxruntime-cuda": CUDA_EP in have,
        "onnxruntime-tensorrt": TRT_EP in have,
        "tensorrt": _has_module("tensorrt"),
    }


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _say(note: str) -> None:
    """A fallback, in one line on stderr (stdout may carry `--json -`)."""
    print(f"warning: {' '.join(note.split())}", file=sys.stderr, flush=True)


def open_engine(model: LoadedModel, device: str = "auto") -> Engine:
    """The engine for `device` (auto|cpu|cuda|tensorrt); one per model and device per process."""
    if device not in DEVICES:
        raise RicenetError(f"unknown device {device!r}", fix=f"use one of {', '.join(DEVICES)}")
    return ENGINES.get((str(model.path), model.sha256, device), lambda: _open(model, device))


def forget_engines() -> None:
    """Drop this process's cached engines (a benchmark that opens many frees GPU memory)."""
    ENGINES.clear()


def _open(model: LoadedModel, device: str) -> Engine:
    if model.format == "tensorrt":
        if device == "cpu":
            raise RicenetError("a TensorRT engine runs only on a CUDA GPU", model.path,
                               fix="pass the .onnx model for --device cpu")
        return TensorRTEngine(model)
    ort = import_onnxruntime()
    have = set(ort.get_available_providers())
    wanted = providers_for(device, have)
    if wanted[0] == CPU_EP:
        return OnnxRuntimeEngine(model, wanted)
    if wanted[0] not in have:
        builds = onnxruntime_builds()
        mixed = (f" ({' and '.join(builds)} are both installed and overwrite each other)"
                 if len(builds) > 1 else " (no GPU build installed)")
        raise RicenetError(f"--device {device} asked for, but this onnxruntime has no "
                           f"{label(wanted[0])} execution provider{mixed}",
                           fix="pip install 'ricecli[gpu]' on a machine with an NVIDIA GPU "
                           "(uninstall the CPU onnxruntime first), or use --device cpu")
    missing = preload_gpu_libraries(ort, tensorrt=wanted[0] == TRT_EP)
    try:
        engine = OnnxRuntimeEngine(model, wanted)
    except ProviderError as err:
        if device != "auto":
            raise
        engine = OnnxRuntimeEngine(model, [CPU_EP])
        engine.requested = wanted
        engine.fallback = f"{err.problem}; running on CPU"
        _say(engine.fallback)
        return engine
    if engine.providers[0] != wanted[0]:
        problem, fix = not_loaded(wanted[0], device, missing, onnxruntime_builds(),
                                  gpu_identity())
        if device != "auto":
            raise RicenetError(problem, fix=fix)
        if engine.providers[0] == CPU_EP:  # a CPU-only session gets the CPU's own settings
            engine = OnnxRuntimeEngine(model, [CPU_EP])
            engine.requested = wanted
        engine.fallback = f"{problem}; running on {label(engine.providers[0])}"
        _say(engine.fallback)
    return engine


def describe(engine: Engine) -> str:
    """One line saying which engine runs and on what (and what it fell back from)."""
    line = f"{engine.name} ({', '.join(engine.providers)}), batch <= {engine.max_batch}"
    fallback = getattr(engine, "fallback", None)
    return f"{line}; fell back: {fallback}" if fallback else line

"""Inference behind one interface, `run(volumes[N,C,D,H,W]) -> (probs, members)`: one ONNX
Runtime session over the providers a device asks for (gpu.py).

`cpu` runs on the CPU; `cuda`, and `auto` when onnxruntime has it, on CUDA; `tensorrt` on ORT's
TensorRT provider, its engines cached per model sha256. A GPU that was asked for and cannot run
is a one-line RicenetError with its fix (exit 2); `auto` falls back to the CPU and says so in one
stderr line, kept in `engine.fallback`. The graph is run as exported: rewrites happen once, at
export (export/merge_convs.py).
"""

from __future__ import annotations

import sys
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, runtime_checkable

import numpy as np

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.errors import ModelError, RicenetError
from ricecli.inference.gpu import (
    CUDA_EP,
    CUDA_OPTIONS,
    LABELS,
    SHORT_NAMES,
    TRT_EP,
    ProviderError,
    cache_lock,
    engine_cache_dir,
    gpu_error,
    not_loaded,
    preload_gpu_libraries,
    provider_error,
    providers_for,
    trt_options,
)
from ricecli.inference.model import LoadedModel
from ricecli.memo import process_cache
from ricecli.runtime import CPU_EP, import_onnxruntime, onnxruntime_builds, session_options

__all__ = ["DEVICES", "Engine", "OnnxRuntimeEngine", "available_engines", "describe",
           "forget_engines", "open_engine"]

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
TRT_OPT_BATCH = 16  # the TensorRT profile's optimum: explain's default occlusion batch
CPU_BATCH_BYTES = 256 << 20  # input bytes per CPU call: activations are ~10x the input
GPU_BATCH_BYTES = 1 << 30
Outputs = tuple[np.ndarray, np.ndarray]  # (mean probabilities [N,2], members [N,M,2])
ProviderList = list[str | tuple[str, dict[str, str]]]  # what InferenceSession's providers takes


@runtime_checkable
class Engine(Protocol):
    """What every engine offers: a name, the providers it runs on, and batched inference."""

    name: str
    providers: list[str]
    max_batch: int

    def run(self, volumes: np.ndarray) -> Outputs:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        ...


def batch_limit(model: LoadedModel, budget_bytes: int) -> int:
    """Largest batch whose input fits the budget (at least 1, at most 64; the graph may fix it)."""
    if model.fixed_batch:
        return model.fixed_batch
    shape = model.spec.model_space.shape_zyx
    per_volume = 4 * len(model.spec.channels) * shape[0] * shape[1] * shape[2]
    return int(max(1, min(64, budget_bytes // per_volume)))


def _input_chw(model: LoadedModel) -> tuple[int, ...]:
    return (len(model.spec.channels), *model.spec.model_space.shape_zyx)


def session_providers(model: LoadedModel, wanted: list[str]) -> ProviderList:
    """The providers with their options: CUDA computes fp32 as fp32 (no TF32); the TensorRT
    provider gets batch profiles and its engine cache folder (made here)."""
    listed: ProviderList = []
    for provider in wanted:
        if provider == CUDA_EP:
            listed.append((provider, dict(CUDA_OPTIONS)))
        elif provider == TRT_EP:
            chw = () if model.fixed_batch else _input_chw(model)
            listed.append((provider, trt_options(engine_cache_dir(model.sha256), chw,
                                                 batch_limit(model, GPU_BATCH_BYTES),
                                                 TRT_OPT_BATCH)))
        else:
            listed.append(provider)
    return listed


class OnnxRuntimeEngine:
    """One ONNX Runtime session on the given execution providers (CPU alone by default)."""

    def __init__(self, model: LoadedModel, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self.model = model
        wanted = providers or [CPU_EP]
        self.requested = list(wanted)
        self.fallback: str | None = None  # set by open_engine when it ran on less than asked
        opts = session_options(threads)
        listed = session_providers(model, wanted)
        lock: AbstractContextManager[None] = (cache_lock(engine_cache_dir(model.sha256))
                                              if TRT_EP in wanted else nullcontext())
        try:
            # enable_fallback=0: ORT's own fallback prints a banner on stdout (breaking `--json
            # -`) and hides which provider failed, so open_engine decides instead; it also says
            # in one line what ORT warns about a provider missing from this build.
            with lock, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Specified provider")
                self.session = ort.InferenceSession(str(model.path), opts, providers=listed,
                                                    enable_fallback=0)
        except RicenetError:
            raise
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            raise provider_error(str(err), wanted, model.path) from None
        self.providers = list(self.session.get_providers())
        gpu = self.providers[0] != CPU_EP
        self.name = "onnxruntime-" + SHORT_NAMES.get(self.providers[0], self.providers[0])
        self.max_batch = batch_limit(model, GPU_BATCH_BYTES if gpu else CPU_BATCH_BYTES)
        self.threads: int = opts.intra_op_num_threads

    def _call(self, batch: np.ndarray) -> Outputs:
        try:
            probs, members = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        except Exception as err:  # noqa: BLE001 - a GPU failure becomes a one-line error
            known = gpu_error(str(err), self.model.path)
            if known is None:
                raise
            raise known from None
        return probs, members

    def run(self, volumes: np.ndarray) -> Outputs:
        """volumes float32 [N,C,D,H,W] (a 4-D volume is a batch of one) -> (mean probabilities
        [N,2], members [N,M,2]); larger batches than max_batch run in slices."""
        want = _input_chw(self.model)
        volumes = np.asarray(volumes)
        if volumes.ndim == 4:
            volumes = volumes[None]
        if volumes.ndim != 5 or tuple(volumes.shape[1:]) != want:
            raise ModelError(f"input volumes have shape {list(volumes.shape)}, the model expects "
                             f"[N,{','.join(map(str, want))}]", self.model.path,
                             fix="prepare the case with this model's spec")
        volumes = np.ascontiguousarray(volumes, dtype=np.float32)
        if len(volumes) <= self.max_batch:
            return self._call(volumes)
        parts = [self._call(volumes[i:i + self.max_batch])
                 for i in range(0, len(volumes), self.max_batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def available_engines() -> dict[str, bool]:
    """Which ONNX Runtime providers this machine's onnxruntime offers."""
    have = set(import_onnxruntime().get_available_providers())
    return {f"onnxruntime-{short}": provider in have for provider, short in SHORT_NAMES.items()}


def open_engine(model: LoadedModel, device: str = "auto") -> Engine:
    """The engine for `device` (auto|cpu|cuda|tensorrt); one per model and device per process
    (a session is slow to create and a GPU one holds device memory)."""
    if device not in DEVICES:
        raise RicenetError(f"unknown device {device!r}", fix=f"use one of {', '.join(DEVICES)}")
    return _open(model, device)


def forget_engines() -> None:
    """Drop this process's engines (a benchmark that opens many frees GPU memory)."""
    _open.cache_clear()  # type: ignore[attr-defined]


def _say(note: str) -> None:
    """A fallback, in one line on stderr (stdout may carry `--json -`)."""
    print(f"warning: {' '.join(note.split())}", file=sys.stderr, flush=True)


@process_cache()
def _open(model: LoadedModel, device: str) -> Engine:
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
                           f"{LABELS[wanted[0]]} execution provider{mixed}",
                           fix="pip install 'ricecli[gpu]' on a machine with an NVIDIA GPU "
                           "(uninstall the CPU onnxruntime first), or use --device cpu")
    missing = preload_gpu_libraries()
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
        problem, fix = not_loaded(wanted[0], missing, onnxruntime_builds())
        if device != "auto":
            raise RicenetError(problem, fix=fix)
        if engine.providers[0] == CPU_EP:  # a CPU-only session gets the CPU's own settings
            engine = OnnxRuntimeEngine(model, [CPU_EP])
            engine.requested = wanted
        engine.fallback = f"{problem}; running on {LABELS[engine.providers[0]]}"
        _say(engine.fallback)
    return engine


def describe(engine: Engine) -> str:
    """One line saying which engine runs and on what (and what it fell back from)."""
    line = f"{engine.name} ({', '.join(engine.providers)}), batch <= {engine.max_batch}"
    fallback = getattr(engine, "fallback", None)
    return f"{line}; fell back: {fallback}" if fallback else line

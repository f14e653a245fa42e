"""The ONNX Runtime engine: one session on the execution providers open_engine chose. On the
CPU alone it runs the exactly rewritten graph (ort_rewrite.py); with ORT's TensorRT provider
its engines are cached in a folder keyed by the model's bytes (engine_cache.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.errors import RicenetError
from ricecli.inference.batches import (
    CPU_BATCH_BYTES,
    GPU_BATCH_BYTES,
    batch_limit,
    check_volumes,
    run_in_chunks,
)
from ricecli.inference.engine_cache import (
    cache_lock,
    engine_cache_dir,
    tensorrt_library_version,
    trt_provider_options,
)
from ricecli.inference.gpu import (
    CUDA_EP,
    CUDA_OPTIONS,
    TRT_EP,
    gpu_error,
    gpu_identity,
    provider_error,
    short_name,
)
from ricecli.inference.model import LoadedModel
from ricecli.inference.ort_rewrite import cpu_session_source
from ricecli.runtime import CPU_EP, import_onnxruntime, session_options


class OnnxRuntimeEngine:
    """One ONNX Runtime session (per process and model) on the given execution providers."""

    def __init__(self, model: LoadedModel, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self.model = model
        wanted = providers or [CPU_EP]
        self.requested = list(wanted)
        self.fallback: str | None = None  # set by open_engine when it ran on less than asked
        opts = session_options(threads)
        try:
            with _engine_cache_guard(model, wanted) as provider_list, _quiet_provider_warnings():
                # enable_fallback=0: ORT's own fallback prints its banner on stdout (breaking
                # `--json -`) and hides which provider failed; open_engine decides instead.
                # On the CPU alone the graph is rewritten exactly (issue 12: merged stem convs).
                source = cpu_session_source(model.path) if wanted == [CPU_EP] else str(model.path)
                self.session = ort.InferenceSession(source, opts,
                                                    providers=provider_list, enable_fallback=0)
        except RicenetError:
            raise
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            raise provider_error(str(err), wanted, model.path) from None
        self.providers = list(self.session.get_providers())
        gpu = self.providers[0] != "CPUExecutionProvider"
        self.name = "onnxruntime-" + short_name(self.providers[0])
        self.max_batch = batch_limit(model, GPU_BATCH_BYTES if gpu else CPU_BATCH_BYTES)
        self.threads: int = opts.intra_op_num_threads

    def _call(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            probs, members = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        except Exception as err:  # noqa: BLE001 - a GPU failure becomes a one-line error
            known = gpu_error(str(err), self.model.path)
            if known is None:
                raise
            raise known from None
        return probs, members

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        return run_in_chunks(self._call, check_volumes(volumes, self.model), self.max_batch)


ProviderList = list[str | tuple[str, dict[str, str]]]  # what InferenceSession's providers takes


def _provider_options(providers: list[str], cache_dir: Path | None = None,
                      model: LoadedModel | None = None) -> ProviderList:
    """Providers with options: CUDA computes fp32 as fp32 (no TF32); the TensorRT EP gets batch
    profiles and its engine cache folder."""
    out: ProviderList = []
    for p in providers:
        if p == CUDA_EP:
            out.append((p, dict(CUDA_OPTIONS)))
        elif p == TRT_EP and model is not None and cache_dir is not None:
            out.append((p, trt_provider_options(model, cache_dir)))
        else:
            out.append(p)
    return out


@contextmanager
def _engine_cache_guard(model: LoadedModel, wanted: list[str]) -> Iterator[ProviderList]:
    """Provider list with options; with the TensorRT EP, its cache folder made and locked."""
    if TRT_EP not in wanted:
        yield _provider_options(wanted)
        return
    ort = import_onnxruntime()
    folder = engine_cache_dir(model.sha256, gpu_identity() or "gpu-unknown",
                              {"ort": ort.__version__, "trt": tensorrt_library_version()})
    with cache_lock(folder):
        yield _provider_options(wanted, folder, model)


@contextmanager
def _quiet_provider_warnings() -> Iterator[None]:
    """ORT warns (several lines) when a requested provider is not in this build; open_engine
    says it in one line instead."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specified provider")
        yield

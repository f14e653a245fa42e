"""Where ORT's TensorRT provider keeps the engines it builds: a folder per model bytes, GPU and
library versions (ORT keys its own cache by file and node names only), locked while in use."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ricecli.contract import INPUT_NAME
from ricecli.errors import RicenetError
from ricecli.inference.batches import GPU_BATCH_BYTES, TRT_OPT_BATCH, batch_limit
from ricecli.inference.model import LoadedModel


def trt_provider_options(model: LoadedModel, cache_dir: Path) -> dict[str, str]:
    """ORT TensorRT EP options: explicit profiles (batch 1..max, optimum at the occlusion batch)
    so the first run builds one engine, not one per new shape; engines and timing cache in
    `cache_dir`, a folder keyed by the model's bytes (see engine_cache_dir)."""
    opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
            "trt_fp16_enable": "False"}
    if model.fixed_batch:  # a static graph needs no profile
        return opts
    chw = "x".join(str(v) for v in (len(model.spec.channels), *model.spec.model_space.shape_zyx))
    top = batch_limit(model, GPU_BATCH_BYTES)
    for key, batch in (("min", 1), ("opt", min(top, TRT_OPT_BATCH)), ("max", top)):
        opts[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{batch}x{chw}"
    return opts


def cache_root() -> Path:
    """Where built engines are kept: $RICENET_CACHE, else ~/.cache/ricenet."""
    return Path(os.environ.get("RICENET_CACHE") or Path.home() / ".cache" / "ricenet")


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in ".+" else "-" for c in str(text).strip())
    return "-".join(p for p in keep.split("-") if p) or "unknown"


def engine_cache_key(model_sha256: str, gpu: str, versions: dict[str, str]) -> str:
    """Folder name of a built engine: ORT keys its cached engines by file and node names, not
    by weights, so a retrained model of the same architecture would reuse a stale engine."""
    if len(model_sha256) != 64 or any(c not in "0123456789abcdef" for c in model_sha256):
        raise ValueError(f"not a sha256 hex digest: {model_sha256!r}")
    tags = [f"{_slug(k)}{_slug(v)}" for k, v in sorted(versions.items())]
    return "-".join([model_sha256, _slug(gpu), *tags])


def engine_cache_dir(model_sha256: str, gpu: str, versions: dict[str, str],
                     root: Path | None = None, kind: str = "ort-trt") -> Path:
    """The engine cache folder for this model, GPU and libraries, created with its parents
    (ORT creates only the last level and then fails); safe when two processes race."""
    folder = (root or cache_root()) / kind / engine_cache_key(model_sha256, gpu, versions)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RicenetError(f"cannot create the engine cache folder ({err.strerror})", folder,
                           fix="set RICENET_CACHE to a writable folder") from None
    return folder


@contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on an engine cache folder: ORT writes engine files in place, so a
    second process must wait for the first to finish building before it reads them."""
    with open(folder / ".lock", "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt
            import time

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.5)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tensorrt_library_version() -> str:
    """Version of the TensorRT libraries ORT's provider would load (package or libnvinfer)."""
    from importlib import metadata

    for dist in ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-cu13", "tensorrt-cu12",
                 "tensorrt"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import ctypes

    for lib in ("libnvinfer.so.11", "libnvinfer.so.10"):
        try:
            return str(ctypes.CDLL(lib).getInferLibVersion())
        except (OSError, AttributeError):
            continue
    return "none"

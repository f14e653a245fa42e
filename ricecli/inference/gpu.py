"""ONNX Runtime on a GPU: which providers a device asks for, loading the CUDA libraries first,
and every GPU failure as one line with its fix (exit 2) instead of a log."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from ricecli.errors import ModelError, RicenetError
from ricecli.inference.cuda import CUDA_MAJOR, LIBS_FIX, NO_GPU_FIX, OOM_FIX
from ricecli.inference.engine_cache import cache_root
from ricecli.memo import Memo
from ricecli.runtime import CPU_EP

CUDA_EP, TRT_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider"
# fp32 models compute in fp32 on the GPU too: ORT's CUDA provider allows TF32 in cuDNN/cuBLAS by
# default, which moved member probabilities by up to 2.7e-4 from the CPU's on an H200
# (benchmarks/results/gpu_h200_extra.json); without it they agree to ~1e-6.
CUDA_OPTIONS = {"use_tf32": "0"}


GPU_LIBRARIES: Memo[str, list[str]] = Memo(
    "gpu-libraries", "the CUDA/cuDNN libraries ONNX Runtime could not preload: loading them "
    "twice would only repeat the failure")


def short_name(provider: str) -> str:
    """How engine names name a provider: cpu, cuda, tensorrt."""
    return {CPU_EP: "cpu", CUDA_EP: "cuda", TRT_EP: "tensorrt"}.get(provider, provider)


def label(provider: str) -> str:
    """How messages name a provider."""
    return {CPU_EP: "CPU", CUDA_EP: "CUDA", TRT_EP: "TensorRT"}.get(provider, provider)


def gpu_device() -> tuple[str, str] | None:
    """(name, compute capability 'MAJOR.MINOR') of CUDA device 0 through the driver (no
    torch), or None without a usable GPU."""
    import ctypes

    for lib in ("libcuda.so.1", "nvcuda.dll", "libcuda.dylib"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    try:
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
            return None
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
    except (AttributeError, OSError):
        return None
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def gpu_identity() -> str | None:
    """'NAME-smMAJOR.MINOR' of CUDA device 0 (it keys engine caches), or None."""
    device = gpu_device()
    return None if device is None else f"{device[0]}-sm{device[1]}"


# --- GPU failures from ONNX Runtime: one line with a fix ------------------------------------

_GPU_FAILURES = (
    ("out of memory", ("out of memory", "cudaerrormemoryallocation", "failed to allocate memory",
                       "cublas_status_alloc_failed", "cudnn_status_alloc_failed")),
    ("no GPU", ("no cuda-capable device", "cudaerrornodevice", "driver version is insufficient",
                "cudaerrorinsufficientdriver", "invalid device ordinal", "all cuda-capable "
                "devices are busy")),
    ("TensorRT missing", ("registertensorrtpluginsascustomops", "libnvinfer.so",
                          "please install tensorrt")),
    ("CUDA libraries", ("cuda_path is set but cuda wasn", "cannot open shared object",
                        "which is missing", "error loading", "failed to load library",
                        "libcudnn", "libcublas")),
    ("engine mismatch", ("version tag does not match", "incompatible device",
                         "serialized engine", "please rebuild", "deserialize")),
)


def gpu_error(text: str, path: Path | str | None = None) -> RicenetError | None:
    """The user-fixable GPU failure an ONNX Runtime / TensorRT / CUDA message names, as a
    one-line error with its fix; None when the message is none of them."""
    low = " ".join(text.lower().split())
    kind = next((k for k, needles in _GPU_FAILURES if any(n in low for n in needles)), None)
    detail = _first_clause(text)
    if kind == "out of memory":
        return RicenetError(f"out of GPU memory ({detail})", path, fix=OOM_FIX)
    if kind == "no GPU":
        return RicenetError(f"no usable NVIDIA GPU ({detail})", path, fix=NO_GPU_FIX)
    if kind == "TensorRT missing":
        return RicenetError(f"TensorRT is not installed or not found ({detail})", path,
                            fix=f"pip install 'ricecli[tensorrt]' (TensorRT for CUDA {CUDA_MAJOR}),"
                            " or use --device cuda")
    if kind == "CUDA libraries":
        return RicenetError(f"CUDA libraries not found ({detail})", path, fix=LIBS_FIX)
    if kind == "engine mismatch":
        return ModelError(f"a cached TensorRT engine was built for another GPU or TensorRT "
                          f"version ({detail})", path, fix=f"delete {cache_root() / 'ort-trt'} "
                          "and run again (it is rebuilt), or use --device cuda")
    return None


def _first_clause(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(" ; ")[0]  # ORT appends "; GPU=...; hostname=...; file=..."
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ProviderError(RicenetError):
    """An ONNX Runtime GPU provider failed to start (kept apart so `auto` can fall back)."""


def provider_error(text: str, wanted: list[str], path: Path | str) -> RicenetError:
    """The error for a session that ONNX Runtime could not create on `wanted` providers."""
    if wanted[0] == CPU_EP:
        return ModelError(f"ONNX Runtime could not open the model ({_first_clause(text)})", path,
                          fix="re-export it with export/to_onnx.py")
    known = gpu_error(text, path)
    if known is not None:
        return ProviderError(known.problem, known.path, fix=known.fix)
    return ProviderError(f"onnxruntime could not start its {label(wanted[0])} provider "
                         f"({_first_clause(text)})", path, fix="check nvidia-smi and the "
                         "CUDA/cuDNN install, or use --device cpu")


def providers_for(device: str, available: Iterable[str]) -> list[str]:
    """The ONNX Runtime providers to ask for: CPU for `cpu` (and for `auto` on a CPU build);
    CUDA for `cuda` and `auto`; ORT's TensorRT provider only for `tensorrt` (its first run
    builds engines for minutes). CPU comes last: it runs what a GPU provider leaves."""
    have = set(available)
    if device == "cpu" or (device == "auto" and CUDA_EP not in have):
        return [CPU_EP]
    if device == "tensorrt":
        return [TRT_EP, CUDA_EP, CPU_EP] if CUDA_EP in have else [TRT_EP, CPU_EP]
    return [CUDA_EP, CPU_EP]


def preload_gpu_libraries(ort: ModuleType, tensorrt: bool = False) -> list[str]:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first GPU session (ORT's
    preload_dlls: torch does it on import, ricecli is torch-free) and, for ORT's TensorRT
    provider, TensorRT's libraries. preload_dlls prints on stdout, so its lines are caught;
    returns the libraries it could not load (once per process)."""
    missing = GPU_LIBRARIES.get("missing", lambda: _preload_dlls(ort))
    if tensorrt:
        try:  # its package loads libnvinfer, which ORT's TensorRT provider then finds
            import tensorrt as _trt  # noqa: F401
        except ImportError:
            pass
    return list(missing)


def _preload_dlls(ort: ModuleType) -> list[str]:
    import contextlib
    import io

    said = io.StringIO()
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(said):
            try:
                ort.preload_dlls()
            except Exception as err:  # noqa: BLE001 - a bad install is told, not raised
                print(f"Failed to load CUDA libraries: {err}", file=said)
    return missing_libraries(said.getvalue())


def missing_libraries(text: str) -> list[str]:
    """Library names from preload_dlls' 'Failed to load NAME: reason' lines."""
    names = set()
    for line in text.splitlines():
        if line.startswith("Failed to load "):
            rest = line[len("Failed to load "):]
            names.add(Path(rest.split(": ")[0].strip()).name)
    return sorted(names)


def not_loaded(provider: str, device: str, missing: list[str], builds: list[str],
               gpu: str | None) -> tuple[str, str]:
    """(problem, fix) when ONNX Runtime started without the GPU provider it was asked for:
    it skips a provider whose libraries do not load and says so only in its log."""
    what = label(provider)
    if len(builds) > 1:
        return (f"onnxruntime did not load its {what} provider: {' and '.join(builds)} are "
                "both installed and overwrite each other's files",
                "pip uninstall -y " + " ".join(builds) + ", then pip install 'ricecli[gpu]'")
    if missing:
        return (f"onnxruntime did not load its {what} provider: CUDA libraries not found "
                f"({', '.join(missing[:4])})", LIBS_FIX)
    if gpu is None:
        return f"onnxruntime did not load its {what} provider: no NVIDIA GPU found", NO_GPU_FIX
    if provider == TRT_EP:
        return (f"onnxruntime did not load its TensorRT provider on {gpu} (TensorRT libraries "
                "missing or of another major version than this onnxruntime-gpu expects)",
                f"pip install 'ricecli[tensorrt]' (TensorRT for CUDA {CUDA_MAJOR}), or use "
                "--device cuda")
    return (f"onnxruntime did not load its {what} provider on {gpu} (its CUDA or cuDNN "
            "libraries did not load)", LIBS_FIX if device != "auto" else NO_GPU_FIX)

"""ONNX Runtime's GPU providers: which ones a device asks for, their options (CUDA without TF32,
TensorRT with an engine cache per model sha256), loading the CUDA libraries first, and every GPU
failure as one line naming its fix (exit 2) instead of a log."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ricecli.contract import INPUT_NAME
from ricecli.errors import ModelError, RicenetError
from ricecli.memo import process_cache
from ricecli.runtime import CPU_EP, cache_root, import_onnxruntime

CUDA_EP, TRT_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider"
SHORT_NAMES = {CPU_EP: "cpu", CUDA_EP: "cuda", TRT_EP: "tensorrt"}  # engine names
LABELS = {CPU_EP: "CPU", CUDA_EP: "CUDA", TRT_EP: "TensorRT"}  # how messages name them
# fp32 models compute in fp32 on the GPU too: ORT's CUDA provider allows TF32 by default, which
# moved member probabilities by up to 2.7e-4 from the CPU's on an H200; without it, 6.6e-7.
CUDA_OPTIONS = {"use_tf32": "0"}
CUDA_MAJOR = 13  # of the gpu/tensorrt extras: onnxruntime-gpu>=1.27, tensorrt-cu13
OOM_FIX = ("close other programs on the GPU (nvidia-smi lists them), use a smaller --batch, "
           "or use --device cpu")
NO_GPU_FIX = ("check that nvidia-smi shows the GPU (driver loaded, CUDA_VISIBLE_DEVICES), "
              "or use --device cpu")
LIBS_FIX = (f"pip install 'ricecli[gpu]' (it brings the CUDA {CUDA_MAJOR} and cuDNN 9 runtime "
            "wheels) or put a matching CUDA/cuDNN on LD_LIBRARY_PATH; or use --device cpu")
TRT_FIX = f"pip install 'ricecli[tensorrt]' (TensorRT for CUDA {CUDA_MAJOR}), or use --device cuda"


def providers_for(device: str, available: Iterable[str]) -> list[str]:
    """The providers to ask for: CPU for `cpu` (and for `auto` without CUDA); CUDA for `cuda`
    and `auto`; ORT's TensorRT provider only for `tensorrt` (its first run builds engines for
    minutes). CPU comes last: it runs what a GPU provider leaves."""
    have = set(available)
    if device == "cpu" or (device == "auto" and CUDA_EP not in have):
        return [CPU_EP]
    if device == "tensorrt":
        return [TRT_EP, CUDA_EP, CPU_EP] if CUDA_EP in have else [TRT_EP, CPU_EP]
    return [CUDA_EP, CPU_EP]


def engine_cache_dir(model_sha256: str) -> Path:
    """The TensorRT provider's engine folder for one model, created with its parents (ORT makes
    only the last level). Keyed by the model's bytes: ORT names its engines by graph and node
    names (and the GPU's compute capability), so a retrained model would reuse a stale one."""
    folder = cache_root() / "ort-trt" / model_sha256
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RicenetError(f"cannot create the engine cache folder ({err.strerror})", folder,
                           fix="set RICENET_CACHE to a writable folder") from None
    return folder


def trt_options(cache_dir: Path, chw: tuple[int, ...], max_batch: int,
                opt_batch: int) -> dict[str, str]:
    """TensorRT provider options: engines and timing cache kept in `cache_dir`; fp32; explicit
    batch profiles 1..max_batch (optimum opt_batch) so one engine serves every batch size.
    chw: the input's (C, D, H, W); empty for a graph with a fixed batch (no profile)."""
    opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
            "trt_fp16_enable": "False"}
    if not chw:
        return opts
    shape = "x".join(map(str, chw))
    for key, batch in (("min", 1), ("opt", min(max_batch, opt_batch)), ("max", max_batch)):
        opts[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{batch}x{shape}"
    return opts


@contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on an engine cache folder while a session opens: ORT writes engine
    files in place, so a second process waits for the first to finish building them."""
    import fcntl

    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@process_cache(maxsize=1)
def preload_gpu_libraries() -> tuple[str, ...]:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first GPU session (ORT's
    preload_dlls; torch does it on import, ricecli is torch-free), and TensorRT's libraries when
    its package is there. preload_dlls prints on stdout, so its lines are caught; returns the
    libraries it could not load (once per process)."""
    import contextlib
    import importlib.util
    import io

    ort = import_onnxruntime()
    said = io.StringIO()
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(said):
            try:
                ort.preload_dlls()
            except Exception as err:  # noqa: BLE001 - a bad install is told, not raised
                print(f"Failed to load CUDA libraries: {err}", file=said)
    if importlib.util.find_spec("tensorrt") is not None:
        import tensorrt  # noqa: F401 - loads libnvinfer, which ORT's TensorRT provider finds
    return tuple(missing_libraries(said.getvalue()))


def missing_libraries(text: str) -> list[str]:
    """Library names from preload_dlls' 'Failed to load NAME: reason' lines."""
    names = set()
    for line in text.splitlines():
        if line.startswith("Failed to load "):
            names.add(Path(line[len("Failed to load "):].split(": ")[0].strip()).name)
    return sorted(names)


def not_loaded(provider: str, missing: Iterable[str], builds: list[str]) -> tuple[str, str]:
    """(problem, fix) when ONNX Runtime started without the GPU provider it was asked for: it
    skips a provider whose libraries do not load and says so only in its log."""
    head = f"onnxruntime did not load its {LABELS.get(provider, provider)} provider"
    missing = list(missing)
    if len(builds) > 1:
        return (f"{head}: {' and '.join(builds)} are both installed and overwrite each other's "
                "files", "pip uninstall -y " + " ".join(builds) + ", then pip install "
                "'ricecli[gpu]'")
    if missing:
        return f"{head}: CUDA libraries not found ({', '.join(missing[:4])})", LIBS_FIX
    if provider == TRT_EP:
        return (f"{head} (TensorRT libraries missing or of another major version than this "
                "onnxruntime-gpu expects)", TRT_FIX)
    return (f"{head} (no usable NVIDIA GPU, or its CUDA/cuDNN libraries did not load)",
            "check that nvidia-smi shows the GPU and that 'ricecli[gpu]' is installed (it "
            "brings the CUDA libraries), or use --device cpu")


class ProviderError(RicenetError):
    """An ONNX Runtime GPU provider failed to start (kept apart so `auto` can fall back)."""


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
                            fix=TRT_FIX)
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


def provider_error(text: str, wanted: list[str], path: Path | str) -> RicenetError:
    """The error for a session that ONNX Runtime could not create on `wanted` providers."""
    if wanted[0] == CPU_EP:
        return ModelError(f"ONNX Runtime could not open the model ({_first_clause(text)})", path,
                          fix="re-export it with export/to_onnx.py")
    known = gpu_error(text, path)
    if known is not None:
        return ProviderError(known.problem, known.path, fix=known.fix)
    return ProviderError(f"onnxruntime could not start its {LABELS[wanted[0]]} provider "
                         f"({_first_clause(text)})", path, fix="check nvidia-smi and the "
                         "CUDA/cuDNN install, or use --device cpu")


"""Inference engines behind one small interface: `run(volumes[N,C,D,H,W]) -> (probs, members)`.

Implementations: ONNX Runtime (CPU; CUDA / TensorRT execution providers when onnxruntime-gpu
is installed) and a native TensorRT `.engine`. `open_engine` applies the provider policy: CPU
for `cpu`; CUDA for `cuda` and, when it really loads, for `auto`; ORT's TensorRT provider only
for `tensorrt`. A fallback is said in one line on stderr and kept in `engine.fallback`; a GPU
that was asked for and cannot run is a one-line RicenetError with a fix (exit 2). Batched calls
are the unit of work; too-large batches are split.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ricecli.errors import ModelError, RicenetError
from ricecli.inference.model import INPUT_NAME, OUTPUT_NAMES, LoadedModel

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU_EP, CUDA_EP, TRT_EP = ("CPUExecutionProvider", "CUDAExecutionProvider",
                           "TensorrtExecutionProvider")
TRT_OPT_BATCH = 16  # the TensorRT profile's optimum: explain's default occlusion batch
CPU_BATCH_BYTES = 256 << 20  # input bytes per CPU call: activations are ~10x the input
GPU_BATCH_BYTES = 1 << 30


@runtime_checkable
class Engine(Protocol):
    """What every engine offers: a name, the providers it runs on, and batched inference."""

    name: str
    providers: list[str]
    max_batch: int

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        ...


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


def _batch_limit(model: LoadedModel, budget_bytes: int) -> int:
    """Largest batch whose input fits the budget (at least 1; the graph may fix it)."""
    if model.fixed_batch:
        return model.fixed_batch
    shape = model.spec.model_space.shape_zyx
    per_volume = 4 * len(model.spec.channels) * shape[0] * shape[1] * shape[2]
    return int(max(1, min(64, budget_bytes // per_volume)))


def _check_volumes(volumes: np.ndarray, model: LoadedModel) -> np.ndarray:
    want = (len(model.spec.channels), *model.spec.model_space.shape_zyx)
    volumes = np.asarray(volumes)
    if volumes.ndim == 4:
        volumes = volumes[None]
    if volumes.ndim != 5 or tuple(volumes.shape[1:]) != want:
        raise ModelError(f"input volumes have shape {list(volumes.shape)}, the model expects "
                         f"[N,{','.join(map(str, want))}]", model.path,
                         fix="prepare the case with this model's spec")
    return np.ascontiguousarray(volumes, dtype=np.float32)


def _run_in_chunks(call, volumes: np.ndarray, max_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Run `call` on slices of at most max_batch volumes and join the results."""
    if len(volumes) <= max_batch:
        return call(volumes)
    parts = [call(volumes[i:i + max_batch]) for i in range(0, len(volumes), max_batch)]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


class OnnxRuntimeEngine:
    """One ONNX Runtime session (per process and model) on the given execution providers."""

    def __init__(self, model: LoadedModel, providers: list[str] | None = None,
                 threads: int | None = None):
        ort = import_onnxruntime()

        self.model = model
        wanted = providers or [CPU_EP]
        self.requested = list(wanted)
        self.fallback: str | None = None  # set by open_engine when it ran on less than asked
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            with _engine_cache_guard(model, wanted) as provider_list, _quiet_provider_warnings():
                # enable_fallback=0: ORT's own fallback prints its banner on stdout (breaking
                # `--json -`) and hides which provider failed; open_engine decides instead.
                from ricecli.inference.ort_rewrite import (
                    cpu_session_source,  # issue 12: exact rewrite
                )

                source = cpu_session_source(model.path) if wanted == [CPU_EP] else str(model.path)
                self.session = ort.InferenceSession(source, opts,
                                                    providers=provider_list, enable_fallback=0)
        except RicenetError:
            raise
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            raise provider_error(str(err), wanted, model.path) from None
        self.providers = list(self.session.get_providers())
        gpu = self.providers[0] != "CPUExecutionProvider"
        self.name = "onnxruntime-" + _short(self.providers[0])
        self.max_batch = _batch_limit(model, GPU_BATCH_BYTES if gpu else CPU_BATCH_BYTES)
        self.threads = opts.intra_op_num_threads

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
        return _run_in_chunks(self._call, _check_volumes(volumes, self.model), self.max_batch)


def _short(provider: str) -> str:
    return {CPU_EP: "cpu", CUDA_EP: "cuda", TRT_EP: "tensorrt"}.get(provider, provider)


def _label(provider: str) -> str:
    """How messages name a provider."""
    return {CPU_EP: "CPU", CUDA_EP: "CUDA", TRT_EP: "TensorRT"}.get(provider, provider)


def _provider_options(providers: list[str], cache_dir: Path | None = None,
                      model: LoadedModel | None = None) -> list:
    """Providers with options: the TensorRT EP gets batch profiles and its engine cache folder."""
    out: list = []
    for p in providers:
        if p == TRT_EP and model is not None and cache_dir is not None:
            out.append((p, trt_provider_options(model, cache_dir)))
        else:
            out.append(p)
    return out


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
    top = _batch_limit(model, GPU_BATCH_BYTES)
    for key, batch in (("min", 1), ("opt", min(top, TRT_OPT_BATCH)), ("max", top)):
        opts[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{batch}x{chw}"
    return opts


# --- engine caches: keyed by the model's bytes, the GPU and the library versions -------------

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
        try:
            import fcntl
        except ImportError:  # Windows
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
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def _engine_cache_guard(model: LoadedModel, wanted: list[str]) -> Iterator[list]:
    """Provider list with options; with the TensorRT EP, its cache folder made and locked."""
    if TRT_EP not in wanted:
        yield _provider_options(wanted)
        return
    import onnxruntime as ort

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


def gpu_identity() -> str | None:
    """'NAME-smMAJOR.MINOR' of CUDA device 0 through the driver (no torch), or None."""
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
    return f"{name.value.decode(errors='replace')}-sm{major.value}.{minor.value}"


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


class TensorRTEngine:
    """A native TensorRT engine (.engine + sidecar); device memory via cuda-python, allocated
    once for the largest batch and reused (cudaFree on every call would synchronise the GPU)."""

    def __init__(self, model: LoadedModel):
        try:
            import tensorrt as trt
        except ImportError:
            raise ModelError("this is a TensorRT engine but the tensorrt package is missing",
                             model.path, fix="pip install 'ricecli[tensorrt]' on a CUDA machine, "
                             "or pass the .onnx model instead") from None
        self.model = model
        self.requested = ["tensorrt"]
        self.fallback: str | None = None
        self._mem = _CudaMemory.open()
        check_engine_target(model.extra, trt.__version__, self._mem.compute_capability(),
                            model.path)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(model.path.read_bytes())
        if self.engine is None:
            raise ModelError("TensorRT could not deserialise the engine (built with another "
                             "TensorRT version or GPU?)", model.path,
                             fix="rebuild it on this machine with export/to_trt.py")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RicenetError("TensorRT could not create an execution context (out of GPU "
                               "memory?)", model.path, fix=OOM_FIX)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        check_engine_io({n: (_enum_name(self.engine.get_tensor_mode(n)),
                             _enum_name(self.engine.get_tensor_dtype(n))) for n in names},
                        model.path)
        profile_max = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]
        self.max_batch = int(min(profile_max[0], _batch_limit(model, GPU_BATCH_BYTES)))
        self.name = "tensorrt"
        self.providers = ["TensorRT " + trt.__version__, self._mem.kind]
        self._shapes(self.max_batch)  # every buffer at its largest size, once

    def _shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Set the input shape for `batch`; bind buffers of the I/O shapes it implies."""
        chw = (len(self.model.spec.channels), *self.model.spec.model_space.shape_zyx)
        shapes = {INPUT_NAME: (batch, *chw)}
        self.context.set_input_shape(INPUT_NAME, shapes[INPUT_NAME])
        shapes.update({n: tuple(self.context.get_tensor_shape(n)) for n in OUTPUT_NAMES})
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * np.dtype(np.float32).itemsize
            self.context.set_tensor_address(name, self._mem.buffers.get(name, nbytes))
        return shapes

    def _call(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shapes = self._shapes(len(batch))
        self._mem.upload(self._mem.buffers.get(INPUT_NAME, batch.nbytes), batch)
        if not self.context.execute_async_v3(self._mem.stream_handle()):
            raise RuntimeError("TensorRT execution failed")
        outs = tuple(np.empty(shapes[n], dtype=np.float32) for n in OUTPUT_NAMES)
        for name, host in zip(OUTPUT_NAMES, outs, strict=True):
            self._mem.download(host, self._mem.buffers.get(name, host.nbytes))
        self._mem.synchronize()
        return outs

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        return _run_in_chunks(self._call, _check_volumes(volumes, self.model), self.max_batch)


def _enum_name(value: object) -> str:
    """'FLOAT' from trt.DataType.FLOAT, 'INPUT' from trt.TensorIOMode.INPUT."""
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1]


def check_engine_io(io: dict[str, tuple[str, str]], path: Path | str) -> None:
    """Refuse an engine whose I/O ricecli cannot feed: `io` maps each tensor name to (mode,
    dtype) as TensorRT names them; ricecli writes float32 `volumes` and reads float32 outputs,
    so an fp16-I/O engine would be read as garbage."""
    if INPUT_NAME not in io or any(n not in io for n in OUTPUT_NAMES):
        raise ModelError(f"engine tensors are {list(io)}, expected {INPUT_NAME!r} and "
                         f"{list(OUTPUT_NAMES)}", path,
                         fix="rebuild it from the ricenet ONNX with export/to_trt.py")
    want = {INPUT_NAME: "INPUT", **dict.fromkeys(OUTPUT_NAMES, "OUTPUT")}
    for name, (mode, dtype) in io.items():
        if name not in want and mode == "INPUT":
            raise ModelError(f"engine has an input {name!r} that ricecli does not feed", path,
                             fix="rebuild it from the ricenet ONNX with export/to_trt.py")
        if name not in want:
            continue
        if mode != want[name]:
            raise ModelError(f"engine tensor {name!r} is an {mode.lower()}, ricecli needs it "
                             f"as an {want[name].lower()}", path,
                             fix="rebuild it from the ricenet ONNX with export/to_trt.py")
        if dtype != "FLOAT":
            raise ModelError(f"engine tensor {name!r} is {dtype}; ricecli feeds and reads "
                             "float32 only", path, fix="rebuild it with export/to_trt.py (it "
                             "keeps the I/O float32, fp16 inside)")


def check_engine_target(sidecar: dict, trt_version: str, compute_capability: str | None,
                        path: Path | str) -> None:
    """An engine loads only with the TensorRT version and GPU kind it was built for: say which
    differs (from the sidecar) rather than let deserialisation fail with a log line."""
    built = sidecar.get("tensorrt_version")
    if built and built != trt_version:
        raise ModelError(f"engine built with TensorRT {built}, this is {trt_version}", path,
                         fix="rebuild it here with export/to_trt.py")
    gpu = sidecar.get("gpu") if isinstance(sidecar.get("gpu"), dict) else {}
    want = str(gpu.get("compute_capability") or "unknown")
    if compute_capability and want != "unknown" and want != compute_capability:
        raise ModelError(f"engine built for another GPU ({gpu.get('name', '?')}, compute "
                         f"capability {want}); this GPU has {compute_capability}", path,
                         fix="rebuild it on this GPU with export/to_trt.py")


class DeviceBuffers:
    """Named device buffers that only grow: allocated when a call needs more than before,
    reused otherwise, freed on close. `alloc(nbytes) -> ptr` and `free(ptr)` do the memory."""

    def __init__(self, alloc: Callable[[int], int], free: Callable[[int], None]):
        self._alloc, self._free = alloc, free
        self._held: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.allocations = 0

    def get(self, name: str, nbytes: int) -> int:
        """A pointer to at least `nbytes` for `name`."""
        ptr, size = self._held.get(name, (0, 0))
        if nbytes > size:
            if ptr:
                self._free(ptr)
                del self._held[name]
            ptr = self._alloc(max(nbytes, 1))
            self._held[name] = (ptr, nbytes)
            self.allocations += 1
        return ptr

    def close(self) -> None:
        for ptr, _ in self._held.values():
            self._free(ptr)
        self._held.clear()


CUDA_MAJOR = 13  # of the gpu/tensorrt extras: onnxruntime-gpu>=1.27, tensorrt-cu13
OOM_FIX = ("close other programs on the GPU (nvidia-smi lists them), use a smaller --batch, "
           "or use --device cpu")
NO_GPU_FIX = ("check that nvidia-smi shows the GPU (driver loaded, CUDA_VISIBLE_DEVICES), "
              "or use --device cpu")
LIBS_FIX = (f"pip install 'ricecli[gpu]' (it brings the CUDA {CUDA_MAJOR} and cuDNN 9 runtime "
            "wheels) or put a matching CUDA/cuDNN on LD_LIBRARY_PATH; or use --device cpu")


class _CudaMemory:
    """Device buffers and a stream for TensorRT through cuda-python (the `gpu` extra)."""

    def __init__(self, cudart):
        self.lib = cudart
        self.kind = "cuda-python " + _cuda_python_version()
        err, self.stream = cudart.cudaStreamCreate()
        _cuda_ok(err, "cudaStreamCreate")
        self.buffers = DeviceBuffers(self._malloc, self._free)

    @classmethod
    def open(cls) -> _CudaMemory:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python 12 before cuda.bindings
            except ImportError:
                raise RicenetError("TensorRT needs cuda-python for GPU memory",
                                   fix=f"pip install 'ricecli[tensorrt]' (or 'cuda-python>="
                                   f"{CUDA_MAJOR},<{CUDA_MAJOR + 1}')") from None
        err, driver = cudart.cudaDriverGetVersion()
        _cuda_ok(err, "cudaDriverGetVersion")
        check_cuda_versions(_cuda_python_version(), int(driver))
        return cls(cudart)

    def compute_capability(self) -> str | None:
        err, props = self.lib.cudaGetDeviceProperties(0)
        _cuda_ok(err, "cudaGetDeviceProperties")
        return f"{props.major}.{props.minor}"

    def stream_handle(self) -> int:
        return native_handle(self.stream)

    def _malloc(self, nbytes: int) -> int:
        err, ptr = self.lib.cudaMalloc(nbytes)
        _cuda_ok(err, f"cudaMalloc of {nbytes / 2**20:.0f} MiB")
        return native_handle(ptr) if not isinstance(ptr, int) else ptr

    def _free(self, ptr: int) -> None:
        _cuda_ok(self.lib.cudaFree(ptr)[0], "cudaFree")

    def upload(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, dtype=np.float32)
        _cuda_ok(self.lib.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                          self.lib.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                          self.stream)[0], "cudaMemcpyAsync to the GPU")

    def download(self, host: np.ndarray, ptr: int) -> None:
        _cuda_ok(self.lib.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                          self.lib.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                          self.stream)[0], "cudaMemcpyAsync from the GPU")

    def synchronize(self) -> None:
        _cuda_ok(self.lib.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")

    def __del__(self):
        try:
            self.buffers.close()
            self.lib.cudaStreamDestroy(self.stream)
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: nothing left to tell
            pass


def native_handle(cuda_object) -> int:
    """The address a cuda-python object wraps: `get_cuda_native_handle` (cuda-bindings 12.9.1+
    and 13, where int() is deprecated), int() on older bindings."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(cuda_object)
    return int(get_cuda_native_handle(cuda_object))


def _cuda_python_version() -> str:
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def check_cuda_versions(bindings_version: str, driver_version: int) -> None:
    """cuda-python must be built for the CUDA major of the gpu extra and the driver must run it
    (`driver_version` as cudaDriverGetVersion gives it, e.g. 13000 for CUDA 13.0)."""
    try:
        major = int(bindings_version.split(".")[0])
    except ValueError:
        return
    driver_major = driver_version // 1000
    if major != CUDA_MAJOR:
        raise RicenetError(f"cuda-python {bindings_version} is for CUDA {major}; ricecli's GPU "
                           f"stack (onnxruntime-gpu, TensorRT) is built for CUDA {CUDA_MAJOR}",
                           fix=f"pip install 'cuda-python>={CUDA_MAJOR},<{CUDA_MAJOR + 1}' "
                           "(or reinstall 'ricecli[tensorrt]')")
    if driver_major < major:
        raise RicenetError(f"the NVIDIA driver supports CUDA {driver_major}."
                           f"{driver_version % 1000 // 10}, cuda-python needs CUDA {major}",
                           fix=f"update the NVIDIA driver to one for CUDA {major}, or use "
                           "--device cpu")


CUDA_OUT_OF_MEMORY = 2
CUDA_NO_GPU = {3, 35, 100, 101, 46}  # init error, old driver, no device, bad device, busy


def cuda_error(code: int, what: str) -> Exception:
    """A cudaError_t as ricecli's error: a RicenetError (exit 2, with a fix) for the failures a
    user can fix, a RuntimeError (internal error) for the rest."""
    if code == CUDA_OUT_OF_MEMORY:
        return RicenetError(f"out of GPU memory ({what})", fix=OOM_FIX)
    if code in CUDA_NO_GPU:
        return RicenetError(f"no usable NVIDIA GPU (CUDA error {code} in {what})",
                            fix=NO_GPU_FIX)
    return RuntimeError(f"CUDA runtime error {code} in {what}")


def _cuda_ok(err, what: str = "a CUDA call") -> None:
    code = int(getattr(err, "value", err))
    if code != 0:
        raise cuda_error(code, what)


# --- GPU failures from ONNX Runtime: one line with a fix ------------------------------------

_GPU_FAILURES = (
    ("out of memory", ("out of memory", "cudaerrormemoryallocation", "failed to allocate memory",
                       "cublas_status_alloc_failed", "cudnn_status_alloc_failed")),
    ("no GPU", ("no cuda-capable device", "cudaerrornodevice", "driver version is insufficient",
                "cudaerrorinsufficientdriver", "invalid device ordinal", "all cuda-capable "
                "devices are busy")),
    ("CUDA libraries", ("cuda_path is set but cuda wasn", "cannot open shared object",
                        "which is missing", "error loading", "failed to load library",
                        "libcudnn", "libcublas", "libnvinfer")),
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
    return ProviderError(f"onnxruntime could not start its {_label(wanted[0])} provider "
                         f"({_first_clause(text)})", path, fix="check nvidia-smi and the "
                         "CUDA/cuDNN install, or use --device cpu")


def import_onnxruntime():
    """The onnxruntime module, or a one-line error naming the build to install."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise RicenetError(f"ONNX Runtime is not installed or broken ({err})",
                           fix="pip install 'ricecli[cpu]', or 'ricecli[gpu]' on a machine with "
                           "an NVIDIA GPU (one of the two, never both)") from None
    return ort


ORT_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
              "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")


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


_MISSING_LIBS: list[str] | None = None


def preload_gpu_libraries(ort, tensorrt: bool = False) -> list[str]:
    """Load CUDA and cuDNN from the nvidia-* wheels before the first GPU session (ORT's
    preload_dlls: torch does it on import, ricecli is torch-free) and, for ORT's TensorRT
    provider, TensorRT's libraries. preload_dlls prints on stdout, so its lines are caught;
    returns the libraries it could not load."""
    global _MISSING_LIBS
    if _MISSING_LIBS is None:
        import contextlib
        import io

        said = io.StringIO()
        if hasattr(ort, "preload_dlls"):
            with contextlib.redirect_stdout(said):
                try:
                    ort.preload_dlls()
                except Exception as err:  # noqa: BLE001 - a bad install is told, not raised
                    print(f"Failed to load CUDA libraries: {err}", file=said)
        _MISSING_LIBS = missing_libraries(said.getvalue())
    if tensorrt:
        try:  # its package loads libnvinfer, which ORT's TensorRT provider then finds
            import tensorrt as _trt  # noqa: F401
        except ImportError:
            pass
    return list(_MISSING_LIBS)


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
    what = _label(provider)
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


def _say(note: str) -> None:
    """A fallback, in one line on stderr (stdout may carry `--json -`)."""
    print(f"warning: {' '.join(note.split())}", file=sys.stderr, flush=True)


_SESSIONS: dict[tuple, Engine] = {}


def open_engine(model: LoadedModel, device: str = "auto") -> Engine:
    """The engine for `device` (auto|cpu|cuda|tensorrt); one per model and device per process."""
    if device not in DEVICES:
        raise RicenetError(f"unknown device {device!r}", fix=f"use one of {', '.join(DEVICES)}")
    key = (str(model.path), model.sha256, device)
    if key not in _SESSIONS:
        _SESSIONS[key] = _open(model, device)
    return _SESSIONS[key]


def forget_engines() -> None:
    """Drop this process's cached engines (a benchmark that opens many frees GPU memory)."""
    _SESSIONS.clear()


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
                           f"{_label(wanted[0])} execution provider{mixed}",
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
        engine.fallback = f"{problem}; running on {_label(engine.providers[0])}"
        _say(engine.fallback)
    return engine


def describe(engine: Engine) -> str:
    """One line saying which engine runs and on what (and what it fell back from)."""
    line = f"{engine.name} ({', '.join(engine.providers)}), batch <= {engine.max_batch}"
    fallback = getattr(engine, "fallback", None)
    return f"{line}; fell back: {fallback}" if fallback else line

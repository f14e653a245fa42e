"""CUDA through cuda-python for the native TensorRT engine: device buffers, a stream, version
checks, and CUDA errors as one-line RicenetErrors. Also the fix texts every GPU error names."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ricecli.errors import RicenetError

CUDA_MAJOR = 13  # of the gpu/tensorrt extras: onnxruntime-gpu>=1.27, tensorrt-cu13
OOM_FIX = ("close other programs on the GPU (nvidia-smi lists them), use a smaller --batch, "
           "or use --device cpu")
NO_GPU_FIX = ("check that nvidia-smi shows the GPU (driver loaded, CUDA_VISIBLE_DEVICES), "
              "or use --device cpu")
LIBS_FIX = (f"pip install 'ricecli[gpu]' (it brings the CUDA {CUDA_MAJOR} and cuDNN 9 runtime "
            "wheels) or put a matching CUDA/cuDNN on LD_LIBRARY_PATH; or use --device cpu")


class DeviceBuffers:
    """Named device buffers that only grow: allocated when a call needs more than before,
    reused otherwise, freed on close. `alloc(nbytes) -> ptr` and `free(ptr)` do the memory."""

    def __init__(self, alloc: Callable[[int], int], free: Callable[[int], None]) -> None:
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
        """Free every buffer."""
        for ptr, _ in self._held.values():
            self._free(ptr)
        self._held.clear()


class CudaMemory:
    """Device buffers and a stream for TensorRT through cuda-python (the `gpu` extra)."""

    def __init__(self, cudart: ModuleType) -> None:
        self.lib = cudart
        self.kind = "cuda-python " + _cuda_python_version()
        err, self.stream = cudart.cudaStreamCreate()
        _cuda_ok(err, "cudaStreamCreate")
        self.buffers = DeviceBuffers(self._malloc, self._free)

    @classmethod
    def open(cls) -> CudaMemory:
        """cuda-python's runtime, checked against the driver, with a new stream."""
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
        """'MAJOR.MINOR' of device 0."""
        err, props = self.lib.cudaGetDeviceProperties(0)
        _cuda_ok(err, "cudaGetDeviceProperties")
        return f"{props.major}.{props.minor}"

    def stream_handle(self) -> int:
        """The stream's address, as TensorRT's execute_async_v3 takes it."""
        return native_handle(self.stream)

    def _malloc(self, nbytes: int) -> int:
        err, ptr = self.lib.cudaMalloc(nbytes)
        _cuda_ok(err, f"cudaMalloc of {nbytes / 2**20:.0f} MiB")
        return native_handle(ptr) if not isinstance(ptr, int) else ptr

    def _free(self, ptr: int) -> None:
        _cuda_ok(self.lib.cudaFree(ptr)[0], "cudaFree")

    def upload(self, ptr: int, host: np.ndarray) -> None:
        """Copy a host array to device memory at `ptr` (on the stream)."""
        host = np.ascontiguousarray(host, dtype=np.float32)
        _cuda_ok(self.lib.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                          self.lib.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                          self.stream)[0], "cudaMemcpyAsync to the GPU")

    def download(self, host: np.ndarray, ptr: int) -> None:
        """Copy device memory at `ptr` into a host array (on the stream)."""
        _cuda_ok(self.lib.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                          self.lib.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                          self.stream)[0], "cudaMemcpyAsync from the GPU")

    def synchronize(self) -> None:
        """Wait for the stream's copies and kernels."""
        _cuda_ok(self.lib.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")

    def __del__(self) -> None:
        try:
            self.buffers.close()
            self.lib.cudaStreamDestroy(self.stream)
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: nothing left to tell
            pass


def native_handle(cuda_object: Any) -> int:
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


def _cuda_ok(err: Any, what: str = "a CUDA call") -> None:
    code = int(getattr(err, "value", err))
    if code != 0:
        raise cuda_error(code, what)

"""Inference engines behind one small interface: `run(volumes[N,C,D,H,W]) -> (probs, members)`.

Implementations: ONNX Runtime (CPU; CUDA / TensorRT execution providers when onnxruntime-gpu
is installed) and a native TensorRT `.engine`. `open_engine` picks the fastest available and
says which. Batched calls are the unit of work; too-large batches are split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ricecli.errors import ModelError, RicenetError
from ricecli.model import INPUT_NAME, OUTPUT_NAMES, LoadedModel

DEVICES = ("auto", "cpu", "cuda")
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
        import onnxruntime as ort

        self.model = model
        wanted = providers or ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model.path), opts,
                                                providers=_provider_options(wanted))
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            raise ModelError(f"ONNX Runtime could not open the model on {wanted} ({err})",
                             model.path, fix="try --device cpu") from None
        self.providers = list(self.session.get_providers())
        gpu = self.providers[0] != "CPUExecutionProvider"
        self.name = "onnxruntime-" + _short(self.providers[0])
        self.max_batch = _batch_limit(model, GPU_BATCH_BYTES if gpu else CPU_BATCH_BYTES)
        self.threads = opts.intra_op_num_threads

    def _call(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, members = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return probs, members

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        return _run_in_chunks(self._call, _check_volumes(volumes, self.model), self.max_batch)


def _short(provider: str) -> str:
    return {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
            "TensorrtExecutionProvider": "tensorrt"}.get(provider, provider)


def _provider_options(providers: list[str]) -> list:
    """Providers with options: TensorRT EP caches built engines so only the first run pays."""
    out: list = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            cache = Path(os.environ.get("RICENET_CACHE", Path.home() / ".cache" / "ricenet"))
            out.append((p, {"trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache / "trt"),
                            "trt_fp16_enable": False}))
        else:
            out.append(p)
    return out


class TensorRTEngine:
    """A native TensorRT engine (.engine + sidecar); device memory via cuda-python."""

    def __init__(self, model: LoadedModel):
        try:
            import tensorrt as trt
        except ImportError:
            raise ModelError("this is a TensorRT engine but the tensorrt package is missing",
                             model.path, fix="pip install 'ricecli[gpu]' on a CUDA machine, "
                             "or pass the .onnx model instead") from None
        self.model = model
        built = model.extra.get("tensorrt_version")
        if built and built != trt.__version__:
            raise ModelError(f"engine built with TensorRT {built}, this is {trt.__version__}",
                             model.path, fix="rebuild it here with export/to_trt.py")
        self._mem = _CudaMemory.open()
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(model.path.read_bytes())
        if self.engine is None:
            raise ModelError("TensorRT could not deserialise the engine (built with another "
                             "TensorRT version or GPU?)", model.path,
                             fix="rebuild it on this machine with export/to_trt.py")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or any(n not in names for n in OUTPUT_NAMES):
            raise ModelError(f"engine tensors are {names}, expected {INPUT_NAME!r} and "
                             f"{list(OUTPUT_NAMES)}", model.path,
                             fix="rebuild it from the ricenet ONNX with export/to_trt.py")
        profile_max = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2]
        self.max_batch = int(min(profile_max[0], _batch_limit(model, GPU_BATCH_BYTES)))
        self.name = "tensorrt"
        self.providers = ["TensorRT " + trt.__version__, self._mem.kind]

    def _call(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ctx = self.context
        ctx.set_input_shape(INPUT_NAME, tuple(batch.shape))
        out_shapes = {n: tuple(ctx.get_tensor_shape(n)) for n in OUTPUT_NAMES}
        d_in = self._mem.to_device(batch)
        d_out = {n: self._mem.empty(s) for n, s in out_shapes.items()}
        try:
            ctx.set_tensor_address(INPUT_NAME, self._mem.ptr(d_in))
            for n, buf in d_out.items():
                ctx.set_tensor_address(n, self._mem.ptr(buf))
            if not ctx.execute_async_v3(self._mem.stream_handle()):
                raise RuntimeError("TensorRT execution failed")
            self._mem.synchronize()
            return tuple(self._mem.to_host(d_out[n], out_shapes[n]) for n in OUTPUT_NAMES)
        finally:
            for buf in (d_in, *d_out.values()):
                self._mem.free(buf)

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        return _run_in_chunks(self._call, _check_volumes(volumes, self.model), self.max_batch)


class _CudaMemory:
    """Device buffers and a stream for TensorRT through cuda-python (the `gpu` extra)."""

    def __init__(self, cudart):
        self.lib = cudart
        self.kind = "cuda-python"
        err, self.stream = cudart.cudaStreamCreate()
        _cuda_ok(err)

    @classmethod
    def open(cls) -> _CudaMemory:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart
            except ImportError:
                raise RicenetError("TensorRT needs cuda-python for GPU memory",
                                   fix="pip install 'ricecli[gpu]' (or cuda-python)") from None
        return cls(cudart)

    def stream_handle(self) -> int:
        return int(self.stream)

    def to_device(self, host: np.ndarray) -> int:
        host = np.ascontiguousarray(host, dtype=np.float32)
        buf = self.empty(host.shape)
        _cuda_ok(self.lib.cudaMemcpy(buf, host.ctypes.data, host.nbytes,
                                     self.lib.cudaMemcpyKind.cudaMemcpyHostToDevice)[0])
        return buf

    def empty(self, shape: tuple[int, ...]) -> int:
        err, ptr = self.lib.cudaMalloc(int(np.prod(shape)) * 4)
        _cuda_ok(err)
        return int(ptr)

    def ptr(self, buf: int) -> int:
        return int(buf)

    def synchronize(self) -> None:
        _cuda_ok(self.lib.cudaStreamSynchronize(self.stream)[0])

    def to_host(self, buf: int, shape: tuple[int, ...]) -> np.ndarray:
        host = np.empty(shape, dtype=np.float32)
        _cuda_ok(self.lib.cudaMemcpy(host.ctypes.data, buf, host.nbytes,
                                     self.lib.cudaMemcpyKind.cudaMemcpyDeviceToHost)[0])
        return host

    def free(self, buf: int) -> None:
        _cuda_ok(self.lib.cudaFree(buf)[0])


def _cuda_ok(err) -> None:
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime error {err}")


def available_engines() -> dict[str, bool]:
    """Which engines this machine can run (ORT providers and native TensorRT)."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return {
        "onnxruntime-cpu": "CPUExecutionProvider" in have,
        "onnxruntime-cuda": "CUDAExecutionProvider" in have,
        "onnxruntime-tensorrt": "TensorrtExecutionProvider" in have,
        "tensorrt": _has_module("tensorrt"),
    }


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


_SESSIONS: dict[tuple, Engine] = {}


def open_engine(model: LoadedModel, device: str = "auto") -> Engine:
    """The fastest engine for `device` (auto|cpu|cuda); one per model and device per process."""
    if device not in DEVICES:
        raise RicenetError(f"unknown device {device!r}", fix=f"use one of {', '.join(DEVICES)}")
    key = (str(model.path), model.sha256, device)
    if key not in _SESSIONS:
        _SESSIONS[key] = _open(model, device)
    return _SESSIONS[key]


def _open(model: LoadedModel, device: str) -> Engine:
    have = available_engines()
    if model.format == "tensorrt":
        if device == "cpu":
            raise RicenetError("a TensorRT engine runs only on a CUDA GPU", model.path,
                               fix="pass the .onnx model for --device cpu")
        return TensorRTEngine(model)
    gpu = [p for p, ok in (("TensorrtExecutionProvider", have["onnxruntime-tensorrt"]),
                           ("CUDAExecutionProvider", have["onnxruntime-cuda"])) if ok]
    if device == "cpu" or (device == "auto" and not gpu):
        return OnnxRuntimeEngine(model, ["CPUExecutionProvider"])
    if not gpu:
        raise RicenetError("--device cuda asked for, but this onnxruntime has no CUDA "
                           "execution provider (no GPU build installed)",
                           fix="pip install 'ricecli[gpu]' on a machine with an NVIDIA GPU, "
                           "or use --device cpu")
    engine = OnnxRuntimeEngine(model, [*gpu, "CPUExecutionProvider"])
    if engine.providers[0] == "CPUExecutionProvider":
        if device == "cuda":
            raise RicenetError("onnxruntime could not start its CUDA provider (no usable GPU "
                               "or CUDA libraries missing)", fix="check nvidia-smi and the "
                               "CUDA/cuDNN install, or use --device cpu")
    return engine


def describe(engine: Engine) -> str:
    """One line saying which engine runs and on what."""
    return f"{engine.name} ({', '.join(engine.providers)}), batch <= {engine.max_batch}"

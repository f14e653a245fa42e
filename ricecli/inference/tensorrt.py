"""The native TensorRT engine: a `.engine` built by export/to_trt.py for this GPU and TensorRT
version, run with device buffers allocated once (see cuda.py), after checking that its I/O
and build target are what ricecli feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ricecli.contract import INPUT_NAME, OUTPUT_NAMES
from ricecli.errors import ModelError, RicenetError
from ricecli.inference.batches import GPU_BATCH_BYTES, batch_limit, check_volumes, run_in_chunks
from ricecli.inference.cuda import OOM_FIX, CudaMemory
from ricecli.inference.model import LoadedModel


class TensorRTEngine:
    """A native TensorRT engine (.engine + sidecar); device memory via cuda-python, allocated
    once for the largest batch and reused (cudaFree on every call would synchronise the GPU)."""

    def __init__(self, model: LoadedModel) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise ModelError("this is a TensorRT engine but the tensorrt package is missing",
                             model.path, fix="pip install 'ricecli[tensorrt]' on a CUDA machine, "
                             "or pass the .onnx model instead") from None
        self.model = model
        self.requested = ["tensorrt"]
        self.fallback: str | None = None
        self._mem = CudaMemory.open()
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
        self.max_batch = int(min(profile_max[0], batch_limit(model, GPU_BATCH_BYTES)))
        self.name = "tensorrt"
        self.providers = ["TensorRT " + trt.__version__, self._mem.kind]
        self._shapes(self.max_batch)  # every buffer at its largest size, once

    def _shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Set the input shape for `batch`; bind buffers of the I/O shapes it implies."""
        chw = (len(self.model.spec.channels), *self.model.spec.model_space.shape_zyx)
        shapes: dict[str, tuple[int, ...]] = {INPUT_NAME: (batch, *chw)}
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
        probs, members = (np.empty(shapes[n], dtype=np.float32) for n in OUTPUT_NAMES)
        for name, host in zip(OUTPUT_NAMES, (probs, members), strict=True):
            self._mem.download(host, self._mem.buffers.get(name, host.nbytes))
        self._mem.synchronize()
        return probs, members

    def run(self, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """volumes float32 [N,C,D,H,W] -> (mean probabilities [N,2], members [N,M,2])."""
        return run_in_chunks(self._call, check_volumes(volumes, self.model), self.max_batch)


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


def check_engine_target(sidecar: dict[str, Any], trt_version: str, compute_capability: str | None,
                        path: Path | str) -> None:
    """An engine loads only with the TensorRT version and GPU kind it was built for: say which
    differs (from the sidecar) rather than let deserialisation fail with a log line."""
    built = sidecar.get("tensorrt_version")
    if built and built != trt_version:
        raise ModelError(f"engine built with TensorRT {built}, this is {trt_version}", path,
                         fix="rebuild it here with export/to_trt.py")
    gpu = sidecar.get("gpu")
    if not isinstance(gpu, dict):
        gpu = {}
    want = str(gpu.get("compute_capability") or "unknown")
    if compute_capability and want != "unknown" and want != compute_capability:
        raise ModelError(f"engine built for another GPU ({gpu.get('name', '?')}, compute "
                         f"capability {want}); this GPU has {compute_capability}", path,
                         fix="rebuild it on this GPU with export/to_trt.py")

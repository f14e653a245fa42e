"""ONNX model -> TensorRT engine for this GPU, with a JSON sidecar and a parity check.

Only the TensorRT build is here; reading the model, the sidecar format and the parity check
are ricecli's own (load_model, contract.new_sidecar, OnnxRuntimeEngine vs TensorRTEngine).

    python export/to_trt.py --onnx model.onnx --out model.engine [--fp16] [--max-batch B]
                            [--opt-batch O] [--timing-cache F] [--workspace-gb G]

Works with the TensorRT 10 and 11 Python APIs. TensorRT 11 networks are always strongly typed
and have no FP16 builder flag: precision comes from the ONNX itself, so build from a model
exported with `to_onnx.py --fp16`. On TensorRT 10, `--fp16` on an fp32 ONNX sets the (weakly
typed) FP16 builder flag; an fp16 ONNX is built strongly typed on both. The optimisation
profile covers batch 1..B with its optimum at the occlusion batch O. A timing cache given with
--timing-cache is loaded if present (one from another GPU or TensorRT version is set aside and a
fresh one started) and saved back (atomically) after the build. The parity check runs the
written engine through ricecli's own TensorRTEngine against ricecli's ONNX Runtime engine; an
engine that fails it is not left behind.

The sidecar (`model.engine.json` beside `model.engine`) follows ricecli/contract.py.
Without TensorRT or without a CUDA GPU this exits 2 with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python export/to_trt.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ricecli.cli import report_error  # noqa: E402
from ricecli.contract import INPUT_NAME, new_sidecar, sidecar_path  # noqa: E402
from ricecli.errors import InputError, ModelError  # noqa: E402
from ricecli.inference.engine import OnnxRuntimeEngine, TensorRTEngine  # noqa: E402
from ricecli.inference.gpu import gpu_device  # noqa: E402
from ricecli.inference.model import file_sha256, load_model  # noqa: E402
from ricecli.io.files import write_bytes_atomic  # noqa: E402
from ricecli.runtime import CPU_EP  # noqa: E402
from ricecli.spec import Spec  # noqa: E402

FP16_PARITY_TOL = 1e-2
FP32_PARITY_TOL = 2e-3  # TF32 convolutions are allowed by default


def import_tensorrt() -> Any:
    """The tensorrt module, or a one-line ModelError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelError("TensorRT is not installed",
                         fix="install the tensorrt extra (pip install 'ricecli[tensorrt]') on a "
                         "machine with an NVIDIA GPU, or use the ONNX model with ONNX Runtime"
                         ) from None
    return trt


def trt_major(trt: Any) -> int:
    """The TensorRT major version (10 or 11)."""
    return int(trt.__version__.split(".")[0])


def read_onnx_meta(path: Path) -> tuple[Spec, dict[str, Any], bool]:
    """Spec, card (through ricecli's loader, which checks the I/O contract) and whether the
    model is float16 inside (the card says it; older cards: any float16 initializer)."""
    import onnx

    if not path.is_file():
        raise InputError("ONNX model not found", path, fix="export one with export/to_onnx.py")
    model = load_model(path)
    fp16 = model.card.get("fp16")
    if fp16 is None:
        proto = onnx.load(str(path), load_external_data=False)
        fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    return model.spec, model.card, bool(fp16)


def build_engine(onnx_path: Path, spec: Spec, onnx_fp16: bool, fp16: bool, max_batch: int,
                 opt_batch: int, timing_cache: Path | None, workspace_gb: float
                 ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """Serialized engine bytes and the build description for the sidecar."""
    trt = import_tensorrt()
    major = trt_major(trt)
    if fp16 and not onnx_fp16 and major >= 11:
        raise InputError("TensorRT 11 has no FP16 builder flag; the ONNX model is float32",
                         onnx_path, fix="export with 'python export/to_onnx.py --fp16' and build "
                         "from that file")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = major >= 11 or onnx_fp16
    net_flags = 0
    if strongly_typed and major < 11:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX model ({errors[:200]})", onnx_path,
                         fix="re-export with export/to_onnx.py; check the TensorRT version")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    flags = []
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    chw = [len(spec.channels), *spec.model_space.shape_zyx]
    shapes = {"min": [1, *chw], "opt": [opt_batch, *chw], "max": [max_batch, *chw]}
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(tuple(shapes[k]) for k in ("min", "opt", "max")))
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    _cache, cache_status = attach_timing_cache(
        config.create_timing_cache,
        lambda c: config.set_timing_cache(c, ignore_mismatch=False), cache_bytes)
    if cache_status == "mismatch":
        print(f"note: timing cache {timing_cache} is from another GPU or TensorRT version; "
              "building with a fresh one (it replaces that file)", file=sys.stderr)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError("TensorRT failed to build the engine (see the log above)", onnx_path,
                         fix="try a smaller --max-batch or a larger --workspace-gb")
    if timing_cache is not None:
        data = timing_cache_bytes(config.get_timing_cache())
        if data:
            write_bytes_atomic(timing_cache, data)
        else:
            cache_status = "not saved (TensorRT returned no timing cache)"
    build = {"fp16": bool(fp16 or onnx_fp16), "onnx_fp16": onnx_fp16,
             "strongly_typed": strongly_typed, "flags": flags, "workspace_gb": workspace_gb,
             "timing_cache": str(timing_cache) if timing_cache else None,
             "timing_cache_status": cache_status if timing_cache else None}
    return bytes(plan), build, {"input": INPUT_NAME, **shapes}


def attach_timing_cache(create: Callable[[bytes], Any], attach: Callable[[Any], bool],
                        cached: bytes) -> tuple[object | None, str]:
    """Give the builder a timing cache: the saved one when TensorRT accepts it, else a fresh
    one. `create(bytes)` is config.create_timing_cache, `attach(cache) -> bool` is
    config.set_timing_cache(cache, ignore_mismatch=False), which returns False (and leaves no
    cache, so saving would fail after the whole build) for a cache from another GPU or TensorRT
    version. Returns (cache or None, "loaded" | "new" | "mismatch" | "none")."""
    if cached:
        try:
            cache = create(cached)
        except Exception:  # noqa: BLE001 - a damaged file is a cache to replace, not a failure
            cache = None
        if cache is not None and attach(cache):
            return cache, "loaded"
        status = "mismatch"
    else:
        status = "new"
    cache = create(b"")
    if cache is None or not attach(cache):
        return None, "none"
    return cache, status


def timing_cache_bytes(cache: Any) -> bytes:
    """The serialized timing cache, or b"" when the builder has none."""
    if cache is None:
        return b""
    data = cache.serialize()
    return bytes(data) if data is not None else b""


def trt_parity(engine_path: Path, onnx_path: Path, spec: Spec, batch: int) -> float:
    """Max |TensorRT - ONNX Runtime| on a seeded random batch, both through ricecli's own
    engines (TensorRTEngine on the written engine + sidecar, ONNX Runtime on the CPU)."""
    shape = (batch, len(spec.channels), *spec.model_space.shape_zyx)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    want = OnnxRuntimeEngine(load_model(onnx_path), [CPU_EP]).run(x)
    got = TensorRTEngine(load_model(engine_path)).run(x)
    return float(max(np.abs(g - w).max() for g, w in zip(got, want, strict=True)))


def convert(onnx_path: Path, out: Path, fp16: bool = False, max_batch: int = 32,
            opt_batch: int = 16, timing_cache: Path | None = None, workspace_gb: float = 8.0,
            parity_batch: int = 2) -> dict[str, Any]:
    """Build, check and write `out` and its sidecar `out.json`; return the sidecar."""
    import hashlib

    trt = import_tensorrt()
    gpu = gpu_device()
    if gpu is None:
        raise ModelError("no CUDA GPU found; TensorRT engines are built on the GPU they run on",
                         fix="run export/to_trt.py on the workstation with the NVIDIA GPU")
    if not 1 <= opt_batch <= max_batch:
        raise InputError(f"--opt-batch {opt_batch} must lie in 1..--max-batch {max_batch}",
                         fix="e.g. --max-batch 32 --opt-batch 16")
    spec, card, onnx_fp16 = read_onnx_meta(onnx_path)
    start = time.perf_counter()
    plan, build, profile = build_engine(onnx_path, spec, onnx_fp16, fp16, max_batch, opt_batch,
                                        timing_cache, workspace_gb)
    build["seconds"] = round(time.perf_counter() - start, 2)
    batch = min(parity_batch, max_batch)
    sidecar = new_sidecar(
        spec, card, engine={"file": out.name, "sha256": hashlib.sha256(plan).hexdigest(),
                            "size_bytes": len(plan)},
        onnx={"file": onnx_path.name, "sha256": file_sha256(onnx_path)},
        tensorrt_version=trt.__version__, gpu={"name": gpu[0], "compute_capability": gpu[1]},
        build=build, profile=profile, parity_batch=batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.build"  # checked here, then moved
    staging.mkdir(exist_ok=True)
    try:
        staged = staging / out.name
        staged.write_bytes(plan)
        sidecar_path(staged).write_text(json.dumps(sidecar, indent=1))
        diff = trt_parity(staged, onnx_path, spec, batch)
        tol = FP16_PARITY_TOL if build["fp16"] else FP32_PARITY_TOL
        if not np.isfinite(diff) or diff > tol:
            raise ModelError(f"TensorRT disagrees with ONNX Runtime by {diff:.2e} (> {tol:g})",
                             out, fix="rebuild without --fp16 or report it with the TensorRT "
                             "version")
        sidecar["parity"]["max_abs_diff_vs_onnxruntime"] = diff
        write_bytes_atomic(out, plan)
        write_bytes_atomic(sidecar_path(out), json.dumps(sidecar, indent=1).encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sidecar


def main(argv: list[str] | None = None) -> int:
    """CLI: build the engine, print its size, build time and parity."""
    import argparse

    ap = argparse.ArgumentParser(prog="python export/to_trt.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True, type=Path, help="ricenet .onnx (to_onnx.py)")
    ap.add_argument("--out", required=True, type=Path, help="the .engine file to write")
    ap.add_argument("--fp16", action="store_true", help="FP16 (TensorRT 10 flag on fp32 ONNX)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--opt-batch", type=int, default=16, help="the occlusion batch size")
    ap.add_argument("--timing-cache", type=Path, default=None)
    ap.add_argument("--workspace-gb", type=float, default=8.0)
    args = ap.parse_args(argv)
    try:
        side = convert(args.onnx, args.out, args.fp16, args.max_batch, args.opt_batch,
                       args.timing_cache, args.workspace_gb)
    except Exception as err:  # noqa: BLE001 - one line, no traceback
        return report_error(err)
    print(f"wrote {args.out}: {side['engine']['size_bytes'] / 1e6:.1f} MB, TensorRT "
          f"{side['tensorrt_version']} on {side['gpu']['name']}, build "
          f"{side['build']['seconds']} s, max |TRT - ORT| = "
          f"{side['parity']['max_abs_diff_vs_onnxruntime']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export, parity and latency figures for both presets on a lent GPU machine (or, degraded,
on CPU): PyTorch CUDA (fp32, fp16/bf16 autocast, channels_last_3d) and ONNX Runtime (CPU, CUDA,
and its TensorRT provider where present). Run through benchmarks/gpu_check.sh; settings come
from GPU_CHECK_* environment variables (see Config). Results are rewritten to --json after
every row, so a run cut short still leaves its figures; the summary table is printed last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.run_folds import fold_checkpoints, load_fold_members  # noqa: E402
from export.to_onnx import export_ensemble  # noqa: E402
from ricecli.io.files import write_text_atomic  # noqa: E402
from ricecli.spec import PRESETS, Spec  # noqa: E402
from train.model import Ensemble, arch_config, build_network  # noqa: E402


def env(name: str, default: str) -> str:
    return os.environ.get(f"GPU_CHECK_{name}", default)


@dataclasses.dataclass
class Config:
    """What to run; every field has a GPU_CHECK_<NAME> override (tiny sizes for CPU tests)."""

    presets: list[str]
    arch: str | None  # override the preset's architecture (e.g. tiny)
    size_xyz: tuple[int, int, int] | None  # override the model-space size
    members: dict[str, int]
    occ_batch: dict[str, int]
    reps: int
    budget_s: float
    exporter: str
    work: Path
    batches: tuple[int, ...] = ()  # GPU_CHECK_BATCHES=1,8,32; empty: 1 and the occlusion batch

    @classmethod
    def from_env(cls, work: Path) -> Config:
        size = env("SIZE_XYZ", "")
        members = {"edge": int(env("MEMBERS_EDGE", "5")), "paper": int(env("MEMBERS_PAPER", "1"))}
        occ = {"edge": int(env("OCC_BATCH_EDGE", "32")), "paper": int(env("OCC_BATCH_PAPER", "4"))}
        if env("MEMBERS", ""):
            members = dict.fromkeys(members, int(env("MEMBERS", "1")))
        if env("OCC_BATCH", ""):
            occ = dict.fromkeys(occ, int(env("OCC_BATCH", "4")))
        return cls(presets=[p for p in env("PRESETS", "edge,paper").split(",") if p],
                   arch=env("ARCH", "") or None,
                   size_xyz=tuple(int(v) for v in size.split("x")) if size else None,
                   members=members, occ_batch=occ, reps=int(env("REPS", "20")),
                   budget_s=float(env("BUDGET_S", "420")), exporter=env("EXPORTER", "auto"),
                   work=work,
                   batches=tuple(int(v) for v in env("BATCHES", "").split(",") if v))


class Bench:
    """Collects rows and export records, rewriting the JSON after each."""

    def __init__(self, cfg: Config, json_path: Path):
        self.cfg, self.json_path, self.start = cfg, json_path, time.perf_counter()
        self.data = {"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
                     "env": environment(), "exports": [], "rows": [],
                     "skipped": []}

    def left(self) -> float:
        return self.cfg.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        write_text_atomic(self.json_path, json.dumps(self.data, indent=1))

    def add(self, key: str, item: dict) -> None:
        self.data[key].append(item)
        self.save()
        print(f"[{time.perf_counter() - self.start:6.1f}s] {key}: {json.dumps(item)}",
              flush=True)

    def skip(self, what: str, why: str) -> None:
        self.add("skipped", {"what": what, "why": why})


def environment() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cpu_threads": torch.get_num_threads(), "gpu": None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                       "capability": f"{p.major}.{p.minor}"}
    for mod in ("onnx", "onnxruntime", "onnxscript", "tensorrt", "monai"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def preset_spec(cfg: Config, preset: str) -> tuple[Spec, dict]:
    """The preset's spec, its model-space size overridden by GPU_CHECK_SIZE_XYZ_<PRESET> or
    GPU_CHECK_SIZE_XYZ (e.g. the paper preset at 96x96x96)."""
    spec = PRESETS[preset]
    own = env(f"SIZE_XYZ_{preset.upper()}", "")
    size = tuple(int(v) for v in own.split("x")) if own else cfg.size_xyz
    if size:
        space = dataclasses.replace(spec.model_space, size_xyz=size)
        spec = dataclasses.replace(spec, model_space=space)
    return spec, arch_config(cfg.arch or preset)


def stats(ms: list[float], batch: int) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "per_volume_ms": float(np.median(a)) / batch,
            "reps": len(ms)}


def time_cuda(fn, reps: int, warmup: int = 3) -> list[float]:
    """Per-call milliseconds by CUDA events, after warm-up (cudnn autotune happens there)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def time_cpu(fn, reps: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def volumes(spec: Spec, batch: int, seed: int = 0) -> np.ndarray:
    shape = (batch, len(spec.channels), *spec.model_space.shape_zyx)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def make_members(cfg: Config, preset: str, spec: Spec, arch: dict) -> tuple[list, Spec, str]:
    run = env(f"RUN_{preset.upper()}", "")
    if run:
        members, spec, _ = load_fold_members(fold_checkpoints(Path(run)))
        return members, spec, f"run {run}"
    torch.manual_seed(0)
    nets = [build_network(arch, len(spec.channels)).eval() for _ in range(cfg.members[preset])]
    return nets, spec, "random weights"


def export_both(b: Bench, preset: str, members: list, spec: Spec, source: str) -> dict:
    """fp32 and fp16 ONNX exports with their parity; falls back to the torchscript exporter."""
    paths = {}
    for fp16 in (False, True):
        out = b.cfg.work / f"{preset}{'-fp16' if fp16 else ''}.onnx"
        card = {"name": f"gpu-check-{preset}", "version": "0.0.0", "source": source}
        exporter = b.cfg.exporter
        for attempt in (exporter, "torchscript"):
            try:
                r = export_ensemble(members, spec, card, out, fp16=fp16, parity_batch=1,
                                    exporter=attempt)
                break
            except Exception as err:  # noqa: BLE001 - record, then fall back once
                b.skip(f"export {preset} fp16={fp16} exporter={attempt}",
                       f"{type(err).__name__}: {str(err)[:300]}")
                if attempt == "torchscript":
                    r = None
        if r is None:
            continue
        b.add("exports", {"preset": preset, "fp16": fp16, "members": r.members,
                          "size_mb": round(r.size_bytes / 1e6, 2), "exporter": r.exporter,
                          "opset": r.opset, "parity_max_abs": r.parity["random"],
                          "seconds": round(r.seconds, 1), "source": source})
        paths[fp16] = out
    return paths


def bench_torch_cuda(b: Bench, preset: str, members: list, spec: Spec, ref: np.ndarray) -> None:
    occ = b.cfg.occ_batch[preset]
    torch.backends.cudnn.benchmark = True
    model = Ensemble([m.cuda() for m in members]).eval()
    modes = [("fp32", None, False), ("fp32+cl3d", None, True), ("fp16-autocast", torch.float16,
             False), ("fp16-autocast+cl3d", torch.float16, True),
             ("bf16-autocast", torch.bfloat16, False), ("bf16-autocast+cl3d", torch.bfloat16, True)]
    for name, dtype, cl in modes:
        fmt = torch.channels_last_3d if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        for batch in (b.cfg.batches or (1, occ)):
            if b.left() < 0:
                b.skip(f"torch-cuda {preset} {name} b{batch}", "time budget")
                continue
            x = torch.from_numpy(volumes(spec, batch)).cuda().contiguous(memory_format=fmt)
            torch.cuda.reset_peak_memory_stats()

            def call(x=x, dtype=dtype, m=model):
                with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16,
                                                            enabled=dtype is not None):
                    return m(x)

            try:
                ms = time_cuda(call, b.cfg.reps if batch == 1 else max(5, b.cfg.reps // 2))
                diff = None
                if batch == 1:
                    diff = float(np.abs(call()[0].float().cpu().numpy() - ref).max())
            except torch.cuda.OutOfMemoryError:
                b.skip(f"torch-cuda {preset} {name} b{batch}", "CUDA out of memory")
                torch.cuda.empty_cache()
                continue
            b.add("rows", {"preset": preset, "engine": "torch-cuda", "mode": name,
                           "batch": batch, "members": len(members), **stats(ms, batch),
                           "max_abs_vs_fp32_cpu": diff,
                           "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
            del x
    model.to(memory_format=torch.contiguous_format).cpu()
    torch.cuda.empty_cache()


def ort_row_engine(device: str, providers: list[str]) -> tuple[str | None, str]:
    """(row label, "") when the session runs on the provider `device` asks for, else (None, why).
    The label comes from session.get_providers(), never from what was asked: CPU timings are
    never reported as GPU ones."""
    want = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider"}[device]
    got = providers[0] if providers else "none"
    if got != want:
        return None, f"asked for {want}, the session runs on {got}"
    return f"onnxruntime-{got[:-len('ExecutionProvider')]}", ""


def open_ricecli_engine(b: Bench, what: str, path: Path, device: str):
    """ricecli's own engine for `path` on `device` (open_engine: its provider policy and
    errors), or None with the reason recorded."""
    from ricecli.inference.engine import open_engine
    from ricecli.inference.model import load_model

    try:
        return open_engine(load_model(path), device)
    except Exception as err:  # noqa: BLE001 - record and go on with the other rows
        b.skip(what, f"{type(err).__name__}: {err}"[:300])
        return None


def bench_onnxruntime(b: Bench, preset: str, members: list, spec: Spec, onnx: dict,
                      ref: np.ndarray, devices: tuple[str, ...] = ("cuda", "cpu")) -> None:
    """ONNX Runtime through ricecli's engines, fp32 and fp16 ONNX, each device on its own: a
    provider that fails to load or run skips its rows only."""
    import onnxruntime as ort

    from ricecli.inference.engine import forget_engines

    occ, cpu_reps = b.cfg.occ_batch[preset], 5 if preset != "paper" else 2
    have = set(ort.get_available_providers())
    for device in devices:
        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}[device]
        if provider not in have:
            b.skip(f"onnxruntime {device} {preset}", f"{provider} not in this onnxruntime")
            continue
        for fp16, path in onnx.items():
            what = f"onnxruntime {device} {preset} fp16={fp16}"
            if b.left() < 0:
                b.skip(what, "time budget")
                continue
            engine = open_ricecli_engine(b, what, path, device)
            if engine is None:
                continue
            label, why = ort_row_engine(device, engine.session.get_providers())
            if label is None:
                b.skip(what, why)
                continue
            on_gpu = device != "cpu"
            for batch in (b.cfg.batches or (1, occ)):
                if (batch > 1 and preset == "paper" and not on_gpu) or b.left() < 0:
                    b.skip(f"{what} b{batch}",
                           "too slow on CPU" if b.left() >= 0 else "time budget")
                    continue
                x = volumes(spec, batch)
                try:
                    ms = time_cpu(lambda e=engine, x=x: e.run(x),
                                  b.cfg.reps if on_gpu else cpu_reps)
                    diff = float(np.abs(engine.run(x)[0] - ref).max()) if batch == 1 else None
                except Exception as err:  # noqa: BLE001 - e.g. out of GPU memory at batch occ
                    b.skip(f"{what} b{batch}", f"{type(err).__name__}: {err}"[:300])
                    continue
                b.add("rows", {"preset": preset, "engine": label,
                               "mode": "fp16-onnx" if fp16 else "fp32", "batch": batch,
                               "members": len(members), **stats(ms, batch),
                               "max_abs_vs_fp32_cpu": diff,
                               "providers": engine.session.get_providers()})
            forget_engines()


def bench_torch_cpu(b: Bench, preset: str, members: list, spec: Spec) -> None:
    if b.left() > 0:
        model = Ensemble([m.cpu() for m in members]).eval()
        x = torch.from_numpy(volumes(spec, 1))
        with torch.inference_mode():
            ms = time_cpu(lambda: model(x), 5 if preset != "paper" else 2)
        b.add("rows", {"preset": preset, "engine": "torch-cpu", "mode": "fp32", "batch": 1,
                       "members": len(members), **stats(ms, 1), "max_abs_vs_fp32_cpu": 0.0})


def preflight(b: Bench, model_path: Path) -> None:
    """ricecli's provider policy on this machine, as a user meets it: open_engine on the
    shipped model for each device, with the providers its session really got."""
    import onnxruntime as ort

    from ricecli.inference.engine import describe, forget_engines, open_engine
    from ricecli.inference.model import load_model
    from ricecli.runtime import onnxruntime_builds

    b.data["preflight"] = {"available_providers": ort.get_available_providers(),
                           "onnxruntime_builds": onnxruntime_builds(), "devices": {}}
    for device in ("auto", "cpu", "cuda", "tensorrt"):
        if b.left() < 0:
            break
        try:
            engine = open_engine(load_model(model_path), device)
            got = {"engine": describe(engine), "fallback": getattr(engine, "fallback", None),
                   "providers": (engine.session.get_providers()
                                 if hasattr(engine, "session") else engine.providers)}
        except Exception as err:  # noqa: BLE001 - an exit-2 message is a result here
            got = {"error": f"{type(err).__name__}: {err}"[:300]}
        b.data["preflight"]["devices"][device] = got
        print(f"preflight --device {device}: {json.dumps(got)}", flush=True)
        forget_engines()
    b.save()


def table(data: dict) -> str:
    lines = [f"GPU: {(data['env']['gpu'] or {}).get('name', 'none')}  torch "
             f"{data['env']['torch']}  onnxruntime {data['env']['onnxruntime']}  TensorRT "
             f"{data['env']['tensorrt']}"]
    for e in data["exports"]:
        lines.append(f"export {e['preset']:<5} {'fp16' if e['fp16'] else 'fp32'}: "
                     f"{e['size_mb']:8.2f} MB, {e['members']} member(s), parity "
                     f"{e['parity_max_abs']:.1e}, {e['exporter']}, {e['seconds']} s")
    lines.append(f"{'preset':<6} {'engine':<22} {'mode':<19} {'N':>3} {'M':>2} "
                 f"{'median ms':>10} {'ms/vol':>9} {'p90 ms':>9} {'|d| fp32':>9}")
    for r in data["rows"]:
        d = r["max_abs_vs_fp32_cpu"]
        lines.append(f"{r['preset']:<6} {r['engine']:<22} {r['mode']:<19} {r['batch']:>3} "
                     f"{r['members']:>2} {r['median_ms']:>10.2f} {r['per_volume_ms']:>9.2f} "
                     f"{r['p90_ms']:>9.2f} {'-' if d is None else f'{d:.1e}':>9}")
    lines += [f"skipped: {s['what']}: {s['why'][:100]}" for s in data["skipped"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ricenet_gpu_check"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    b = Bench(Config.from_env(args.work), args.json)
    print(json.dumps(b.data["env"]), flush=True)
    preflight(b, Path(__file__).resolve().parents[1] / "ricecli" / "data" / "model"
              / "ricenet-edge.onnx")
    for preset in b.cfg.presets:
        try:
            spec, arch = preset_spec(b.cfg, preset)
            members, spec, source = make_members(b.cfg, preset, spec, arch)
            onnx = export_both(b, preset, members, spec, source)
            with torch.inference_mode():  # the fp32 CPU reference every row is compared with
                ref = Ensemble(members).eval()(torch.from_numpy(volumes(spec, 1)))[0].numpy()
        except Exception as err:  # noqa: BLE001 - one preset failing must not lose the other
            b.skip(f"preset {preset}", f"{type(err).__name__}: {err}"[:300])
            traceback.print_exc()
            continue
        # each family on its own (one failing skips only its rows); TensorRT's builds last
        steps = [("torch-cuda", bench_torch_cuda, (members, spec, ref), {}),
                 ("onnxruntime", bench_onnxruntime, (members, spec, onnx, ref), {}),
                 ("torch-cpu", bench_torch_cpu, (members, spec), {}),
                 ("onnxruntime-tensorrt", bench_onnxruntime, (members, spec, onnx, ref),
                  {"devices": ("tensorrt",)})]
        for name, step, step_args, step_kwargs in steps:
            if name == "torch-cuda" and not torch.cuda.is_available():
                b.skip(f"torch-cuda {preset}", "no CUDA GPU")
                continue
            try:
                step(b, preset, *step_args, **step_kwargs)
            except Exception as err:  # noqa: BLE001 - record, then the next family
                b.skip(f"{name} {preset}", f"{type(err).__name__}: {err}"[:300])
                traceback.print_exc()
    b.data["seconds"] = round(time.perf_counter() - b.start, 1)
    b.save()
    print("\n" + table(b.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

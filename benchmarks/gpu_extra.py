"""The GPU figures gpu_bench.py does not give, on the lent GPU machine (benchmarks/gpu_check.sh):

1. parity: member probabilities of the shipped model on the demo cases' prepared inputs,
   ONNX Runtime CUDA (fp32, and fp16 converted by onnxruntime.transformers.float16) vs CPU fp32;
2. `ricecli classify --device cuda` end to end on the demo cases (fresh processes, and warm in
   one process through pipeline.classify: prepare vs infer);
3. explain's occlusion with the paper architecture at N^3 on CUDA (ricecli's plain batched path,
   positions that change nothing skipped) vs MONAI OcclusionSensitivity on the same GPU, with
   the maps compared.

    python benchmarks/gpu_extra.py --demo DIR --json OUT.json [--paper 96]

DIR holds <case>/{post_op,event,dose}.nii.gz and <case>/prepared.npy (the model input
[C, z, y, x] the CPU made, so parity needs no SimpleITK). Results are rewritten after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHIPPED = ROOT / "ricecli" / "data" / "model" / "ricenet-edge.onnx"
DEVICE = os.environ.get("GPU_EXTRA_DEVICE", "cuda")  # cpu: a smoke test without a GPU


class Results:
    """A JSON file rewritten after every step, so a run cut short keeps what it measured."""

    def __init__(self, path: Path):
        self.path, self.data = path, {"env": {}, "steps": {}, "errors": {}}

    def put(self, step: str, value: object) -> None:
        self.data["steps"][step] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        print(f"{step}: {json.dumps(value, default=str)[:600]}", flush=True)

    def fail(self, step: str) -> None:
        self.data["errors"][step] = traceback.format_exc()[-1500:]
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        print(f"{step} FAILED:\n{self.data['errors'][step]}", flush=True)


def environment() -> dict:
    import onnxruntime as ort
    import torch

    p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "onnxruntime": ort.__version__,
            "onnxruntime_providers": ort.get_available_providers(),
            "gpu": None if p is None else f"{p.name} ({p.total_memory / 2**30:.0f} GiB, "
            f"sm_{p.major}{p.minor})", "cpu_count": os.cpu_count()}


def fp16_copy(src: Path, dst: Path) -> Path:
    """The shipped model with fp16 weights and compute, fp32 inputs/outputs (ricecli's contract),
    metadata kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    del half.metadata_props[:]
    half.metadata_props.extend(model.metadata_props)
    onnx.save(half, str(dst))
    return dst


def parity(res: Results, demo: Path, work: Path) -> None:
    """CUDA fp32 / fp16 vs CPU fp32 member and mean probabilities on the demo cases."""
    from ricecli.inference.engine import describe, forget_engines, open_engine
    from ricecli.inference.model import load_model

    x = np.stack([np.load(f) for f in sorted(demo.glob("*/prepared.npy"))]).astype(np.float32)
    out: dict = {"cases": [f.parent.name for f in sorted(demo.glob("*/prepared.npy"))]}
    cpu = open_engine(load_model(SHIPPED), "cpu")
    ref_mean, ref_members = cpu.run(x)
    out["cpu_mean_p"] = ref_mean.tolist()
    for name, path in (("fp32", SHIPPED), ("fp16", fp16_copy(SHIPPED, work / "edge-fp16.onnx"))):
        engine = open_engine(load_model(path), DEVICE)
        mean, members = engine.run(x)
        out[name] = {"engine": describe(engine),
                     "providers": engine.session.get_providers(),  # type: ignore[attr-defined]
                     "max_abs_members": float(np.abs(members - ref_members).max()),
                     "max_abs_mean": float(np.abs(mean - ref_mean).max()),
                     "mean_p": mean.tolist()}
        forget_engines()
    res.put("parity_demo", out)


def classify_e2e(res: Results, demo: Path, work: Path) -> None:
    """`ricecli classify --device cuda` as a user runs it (fresh process each time) and warm in
    one process (pipeline.classify twice per case after one warm-up)."""
    from ricecli.pipeline import classify, open_model
    from ricecli.prepare import CaseInputs

    cases = sorted(p.parent for p in demo.glob("*/prepared.npy"))
    fresh = []
    for i, case in enumerate(cases):
        for rep in range(2):
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", "from ricecli.cli import main; main()", "classify",
                 "--t1", str(case / "post_op.nii.gz"), "--t1", str(case / "event.nii.gz"),
                 "--dose", str(case / "dose.nii.gz"), "--device", DEVICE,
                 "--json", str(work / f"c{i}_{rep}.json")],
                capture_output=True, text=True)
            wall = time.perf_counter() - t
            rec = json.loads((work / f"c{i}_{rep}.json").read_text()) if proc.returncode in (0, 3) \
                else {}
            fresh.append({"case": case.name, "rep": rep, "rc": proc.returncode,
                          "wall_s": round(wall, 3), "engine": rec.get("engine"),
                          "p": (rec.get("probabilities") or {}),
                          "timings_s": rec.get("timings_s"),
                          "stderr": proc.stderr[-400:] if proc.returncode not in (0, 3) else ""})
    res.put("classify_fresh_process", fresh)
    model, engine = open_model(None, DEVICE)
    warm = []
    for case in cases:
        inputs = CaseInputs(case / "post_op.nii.gz", case / "event.nii.gz", case / "dose.nii.gz")
        classify(inputs, model, engine)  # warm-up: template, brain model, CUDA kernels
        for _ in range(2):
            t = time.perf_counter()
            r = classify(inputs, model, engine)
            warm.append({"case": case.name, "wall_s": round(time.perf_counter() - t, 3),
                         "timings_s": {k: round(v, 3) for k, v in
                                       (r.record.get("timings_s") or {}).items()}})
    res.put("classify_warm_in_process", warm)


OPTION_SETS = {"ort-default": {}, "no-tf32": {"use_tf32": "0"},
               "no-tf32+heuristic": {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"},
               "no-tf32+default-algo": {"use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}}


def cuda_options(res: Results, demo: Path, work: Path) -> None:
    """ONNX Runtime CUDA provider options on the shipped model (and the paper model when the
    occlusion step exported it): session + first run (cuDNN algorithm search), steady batch 1 and
    32, parity with the CPU on the demo cases."""
    import onnxruntime as ort

    x = np.stack([np.load(f) for f in sorted(demo.glob("*/prepared.npy"))]).astype(np.float32)
    models = {"edge": SHIPPED}
    if (work / "paper96.onnx").exists():
        models["paper96"] = work / "paper96.onnx"
    out: dict = {}
    for name, path in models.items():
        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
        cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        vol = x if name == "edge" else np.random.default_rng(0).standard_normal(
            (1, *shape.shape[1:]), dtype=np.float32)
        ref = cpu.run(None, {"volumes": vol})[1]
        ep = "CUDAExecutionProvider" if DEVICE == "cuda" else "CPUExecutionProvider"
        ort.InferenceSession(str(path), providers=[ep]).run(
            None, {"volumes": vol[:1]})  # CUDA context and libraries, once, before timing
        for label, opts in OPTION_SETS.items():
            t = time.perf_counter()
            sess = ort.InferenceSession(str(path), providers=[(ep, opts if DEVICE == "cuda"
                                                               else {})])
            t_open = time.perf_counter() - t
            t = time.perf_counter()
            members = sess.run(None, {"volumes": vol})[1]
            t_first = time.perf_counter() - t
            row = {"open_s": round(t_open, 3), "first_run_s": round(t_first, 3),
                   "max_abs_members_vs_cpu": float(np.abs(members - ref).max())}
            for batch in (1, 32):
                xb = np.repeat(vol[:1], batch, axis=0)
                sess.run(None, {"volumes": xb})
                ms = []
                for _ in range(10 if batch == 1 else 5):
                    t = time.perf_counter()
                    sess.run(None, {"volumes": xb})
                    ms.append((time.perf_counter() - t) * 1e3)
                row[f"b{batch}_median_ms"] = round(float(np.median(ms)), 3)
            out[f"{name} {label}"] = row
            del sess
    res.put("cuda_provider_options", out)


def synthetic_case(n: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """[C, n, n, n] smooth channels inside an ellipsoid brain (0 outside), and its mask."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((n, n, n)) / (n - 1) - 0.5
    mask = (zz / 0.38) ** 2 + (yy / 0.45) ** 2 + (xx / 0.40) ** 2 <= 1.0
    vol = np.stack([gaussian_filter(rng.standard_normal((n, n, n)), 2.0) * 3 for _ in
                    range(channels)]).astype(np.float32)
    lesion = ((zz - 0.08) ** 2 + (yy + 0.1) ** 2 + (xx - 0.12) ** 2) < 0.006
    vol[1][lesion] += 2.5
    vol[2] = np.exp(-((zz - 0.08) ** 2 + (yy + 0.1) ** 2 + (xx - 0.12) ** 2) / 0.03)
    return np.where(mask, vol, 0).astype(np.float32), mask


def occlusion_vs_monai(res: Results, work: Path, n: int, cube: int, batch: int) -> None:
    """Paper architecture at n^3, cube = stride = `cube` voxels, fill 0, target recurrence."""
    import dataclasses

    import torch
    from monai.visualize import OcclusionSensitivity

    from export.to_onnx import export_ensemble
    from ricecli.explain.occlusion import occlusion_maps
    from ricecli.inference.engine import describe, forget_engines, open_engine
    from ricecli.inference.model import load_model
    from ricecli.spec import PRESETS
    from train.model import arch_config, build_network

    spec = PRESETS["paper"]
    space = dataclasses.replace(spec.model_space, size_xyz=(n, n, n), spacing_mm=(2.0, 2.0, 2.0))
    spec = dataclasses.replace(spec, model_space=space)
    torch.manual_seed(0)
    net = build_network(arch_config("paper"), len(spec.channels)).eval()
    path = work / f"paper{n}.onnx"
    export_ensemble([net], spec, {"name": f"gpu-paper{n}", "version": "0"}, path)
    vol, mask = synthetic_case(n, len(spec.channels))
    engine = open_engine(load_model(path), DEVICE)
    out: dict = {"shape": [n, n, n], "cube_vox": cube, "batch": batch, "engine": describe(engine),
                 "brain_fraction": round(float(mask.mean()), 3)}

    def ours(size: int) -> object:
        return occlusion_maps(vol, engine, spec.channels, (cube,) * 3, (cube,) * 3, fill=0.0,
                              target="recurrence", classes=spec.classes, batch=size,
                              edges="shift", brain_mask=mask)

    times: list[float] = []
    for size in sorted({8, batch}):  # ORT CUDA ran 3D convs faster per volume at 8 than at 32
        ours(size)  # warm-up (cuDNN algorithm search, allocator)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            m = ours(size)
            runs.append(time.perf_counter() - t)
        out[f"ricecli_s_batch{size}"] = [round(v, 3) for v in runs]
        if not times or np.median(runs) < np.median(times):
            times = runs
    out["ricecli_s"] = [round(v, 3) for v in times]
    out["ricecli_positions"] = m.positions  # type: ignore[attr-defined]
    ricecli_map = m.maps["all"]  # type: ignore[attr-defined]
    forget_engines()
    torch.backends.cudnn.benchmark = True
    gpu_net = net.to("cuda" if DEVICE == "cuda" else "cpu")
    target = list(spec.classes).index("recurrence")
    x = torch.from_numpy(vol[None]).to("cuda" if DEVICE == "cuda" else "cpu")
    occ = OcclusionSensitivity(gpu_net, mask_size=cube, n_batch=batch, mode=0.0, overlap=0.0,
                               verbose=False)
    def sync() -> None:
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    peer = []
    with torch.no_grad():  # activate=True (MONAI's default): the map holds softmax p per class
        occ(x)  # warm-up
        for _ in range(3):
            sync()
            t = time.perf_counter()
            p0 = torch.softmax(gpu_net(x), 1)[0, target].item()
            o, _ = occ(x)
            sync()
            peer.append(time.perf_counter() - t)
    monai_map = p0 - o[0, target].float().cpu().numpy()
    out["monai_s"] = [round(v, 3) for v in peer]
    out["speedup_median"] = round(float(np.median(peer) / np.median(times)), 2)
    out["max_abs_diff_vs_monai"] = float(np.abs(ricecli_map - monai_map).max())
    out["map_max_abs"] = float(np.abs(monai_map).max())
    res.put(f"occlusion_paper{n}_{DEVICE}", out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--paper", type=int, default=96)
    ap.add_argument("--cube", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--only", default="parity,classify,occlusion")
    args = ap.parse_args()
    import torch  # noqa: F401 - loads the CUDA libraries ONNX Runtime's provider links against

    res = Results(args.json)
    res.data["env"] = environment()
    print(json.dumps(res.data["env"]), flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_extra_"))
    steps = {"parity": lambda: parity(res, args.demo, work),
             "classify": lambda: classify_e2e(res, args.demo, work),
             "occlusion": lambda: occlusion_vs_monai(res, work, args.paper, args.cube, args.batch),
             "options": lambda: cuda_options(res, args.demo, work)}
    for name in args.only.split(","):
        try:
            steps[name]()
        except Exception:  # noqa: BLE001 - record and go on with the next step
            res.fail(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

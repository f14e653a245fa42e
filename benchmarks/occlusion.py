"""ricecli explain's occlusion vs MONAI OcclusionSensitivity vs Captum Occlusion (torch CPU).

    python benchmarks/occlusion.py [--threads 2] [--repeats 3] [--cube-mm 16] [--stride-mm 16]
                                   [--batch 16] [--only ricecli,monai,captum] [--checkpoint CKPT]
                                   [--no-incremental] [--depth D] [--members 1]
                                   [--single-thread-work 3]
                                   [--out FILE.json]
    python benchmarks/occlusion.py --paper 96 [--cube-vox 8] [--positions 16] [--threads 2]

Same network (the `edge` ResNet-18, random weights unless --checkpoint; exported to ONNX for
ricecli), same volume (a template-based case in edge model space 56x64x56: template T1 z-scored
in the brain for both T1c channels, a bright lesion in the event channel, a dose blob / 60 Gy,
all 0 outside the brain, as prepared cases are), same cube, stride, fill 0 and target
(recurrence). ricecli runs twice: edges=shift (MONAI's windows) and edges=clip (Captum's),
each compared with its peer. Peers run torch eager with the same thread count and batch.
ricecli runs incrementally (explain's default; --depth fixes the depth; --no-incremental: whole
volumes); every ricecli timing starts from scratch: a new runner (splitting the graph, opening
its ONNX Runtime sessions, choosing the depth) and an empty RICENET_CACHE.

The runs are interleaved, --repeats rounds of ricecli-shift, MONAI, ricecli-clip, Captum, so that
a drift in the machine's load hits both sides of a ratio; each ratio is taken per round and the
median reported. The JSON records the CPU model and SIMD flags, library versions and the 1-minute
load average before and after every timing, and each run's process CPU time beside its wall
time (on a loaded machine torch's threads wait for each other, so the CPU-time ratio is the
better guess at a quiet machine's wall-time ratio).

--paper N: the `paper` architecture (MONAI resnet18 defaults, 1 member, random weights) at
1x3xN^3 (2 mm), cube = stride = --cube-vox voxels. A whole map there costs torch hours on 2
cores, so both sides run the same --positions occlusions (evenly spread over the positions
ricecli runs), side by side: ricecli's incremental runner vs the forward passes MONAI
OcclusionSensitivity makes (torch eager on batches of occluded copies, --batch at a time), and
their probabilities are compared. The whole-map ratio is extrapolated from those per-position
times with the real position counts (MONAI runs every position, ricecli only those that change
the input) plus ricecli's one-off setup.
Prints one line per measurement and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def template_case(spec) -> tuple[np.ndarray, np.ndarray]:
    """[C, z, y, x] channels and the brain mask in model space, from the shipped template."""
    import SimpleITK as sitk

    from ricecli.geometry.template import load_template, model_space_grid

    grid = model_space_grid(spec.model_space)
    t1 = sitk.GetArrayFromImage(sitk.Resample(load_template().t1, grid, sitk.Transform(),
                                              sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    mask = sitk.GetArrayFromImage(sitk.Resample(load_template().mask, grid, sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0)).astype(bool)
    z = np.where(mask, (t1 - t1[mask].mean()) / t1[mask].std(), 0).astype(np.float32)
    zz, yy, xx = np.indices(z.shape)
    c = np.array(z.shape) // 2 + np.array([4, -6, 8])
    r2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
    event = z + 2.5 * np.exp(-r2 / 8.0)
    dose = 60.0 * np.exp(-r2 / 150.0) / spec.dose_scale_gy
    chans = {"post_op": z, "event": event, "dose": dose}
    vol = np.stack([np.where(mask, chans[n], 0) for n in spec.channels]).astype(np.float32)
    return vol, mask.astype(np.uint8)


def network(spec, checkpoint: str | None, seed: int = 0):
    """The edge network in eval mode (random weights with varied BN statistics, or trained)."""
    import torch

    from train.model import arch_config, build_network

    if checkpoint:
        from train.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint).network().eval()
    torch.manual_seed(seed)
    net = build_network(arch_config("edge"), len(spec.channels)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def paper_run(args) -> dict:
    """Per-position cost on the paper architecture at N^3: ricecli incremental vs torch."""
    import torch

    from export.to_onnx import export_ensemble
    from ricecli.explain.incremental import IncrementalNetwork
    from ricecli.explain.positions import plan_jobs
    from ricecli.spec import ModelSpace, Spec
    from train.model import arch_config, build_network

    size = args.paper
    spec = Spec(preset="paper", model_space=ModelSpace(spacing_mm=(2.0, 2.0, 2.0),
                                                       size_xyz=(size, size, size)))
    vol, mask = template_case(spec)
    torch.manual_seed(0)
    net = build_network(arch_config("paper"), len(spec.channels)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    cube = (args.cube_vox,) * 3
    jobs, counts = plan_jobs(vol, [[0, 1, 2]], cube, cube, 0.0, "shift", mask, True)
    pick = np.linspace(0, len(jobs) - 1, min(args.positions, len(jobs))).round().astype(int)
    occlusions = [([0, 1, 2], jobs[i][1]) for i in pick]
    res: dict = {"preset": "paper", "shape_zyx": list(vol.shape[1:]), "cube_vox": list(cube),
                 "threads": args.threads, "batch": args.batch, "positions": counts,
                 "positions_timed": len(occlusions)}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RICENET_CACHE"] = str(Path(tmp) / "cache")
        path = Path(tmp) / "paper.onnx"
        export_ensemble([net], spec, {"name": "bench-paper", "version": "0"}, path,
                        parity_batch=1)
        t0 = time.perf_counter()
        runner = IncrementalNetwork.from_model(path, args.threads, args.depth)
        t1 = time.perf_counter()
        runner.probabilities(vol, occlusions, 0.0, batch=args.batch)  # + base, depth choice
        t2 = time.perf_counter()  # the runner keeps the base activations of this volume
        ours = runner.probabilities(vol, occlusions, 0.0, batch=args.batch)[0]
        t3 = time.perf_counter()
    base_s = max(0.0, (t2 - t1) - (t3 - t2))  # base forward, padding and depth choice
    setup = (t1 - t0) + base_s
    x = torch.from_numpy(vol)
    theirs = []
    t4 = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(occlusions), args.batch):
            part = occlusions[first:first + args.batch]
            batch = x[None].repeat(len(part), 1, 1, 1, 1)
            for i, (_chans, sl) in enumerate(part):
                batch[(i, slice(None), *sl)] = 0.0
            theirs.append(torch.softmax(net(batch), dim=1).numpy())
    t5 = time.perf_counter()
    theirs = np.concatenate(theirs)
    per_ours = (t3 - t2) / len(occlusions)
    per_torch = (t5 - t4) / len(occlusions)
    whole_ours = setup + per_ours * counts["run"]
    whole_monai = per_torch * (counts["total"] + 1)
    res.update({
        "method": runner.method, "depth_costs": runner.costs,
        "ricecli_setup_s": round(setup, 2), "ricecli_base_and_choice_s": round(base_s, 2),
        "ricecli_per_position_s": round(per_ours, 4),
        "torch_per_position_s": round(per_torch, 4),
        "per_position_speedup": round(per_torch / per_ours, 2),
        "whole_map_ricecli_s_extrapolated": round(whole_ours, 1),
        "whole_map_monai_s_extrapolated": round(whole_monai, 1),
        "speedup_vs_monai_extrapolated": round(whole_monai / whole_ours, 2),
        "max_abs_diff_probabilities": float(np.abs(ours - theirs).max()),
        "probability_spread": float(np.ptp(theirs[:, 1]))})
    print(f"paper {size}^3, cube {cube[0]}: ricecli {per_ours:.3f} s/position ({runner.method}; "
          f"setup {setup:.1f} s), torch {per_torch:.3f} s/position: "
          f"{per_torch / per_ours:.1f}x per position; whole map (extrapolated, "
          f"{counts['run']} of {counts['total']} positions run): {whole_ours:.0f} s vs MONAI "
          f"{whole_monai:.0f} s = {whole_monai / whole_ours:.1f}x; max |diff| "
          f"{res['max_abs_diff_probabilities']:.1e}", flush=True)
    return res


def single_thread_work(net, vol, mask, cube, stride, spec, model, repeats: int) -> dict:
    """CPU seconds on one thread, interleaved: torch eager per volume (the forwards MONAI and
    Captum run, batches of 16 copies) vs ricecli's whole exact map (setup included). Thread CPU
    time: other jobs' load and threads waiting for each other do not count, so the ratio is a
    load-proof estimate of the quiet wall-time ratio (peer overheads beyond the forwards left
    out, which only favours the peers)."""
    import torch

    from ricecli.explain.incremental import incremental_for
    from ricecli.explain.occlusion import occlusion_maps
    from ricecli.inference.engine import OnnxRuntimeEngine
    from ricecli.memo import clear_all

    torch.set_num_threads(1)
    engine = OnnxRuntimeEngine(model, threads=1)
    x = torch.from_numpy(vol)[None].repeat(16, 1, 1, 1, 1)
    out: dict = {"torch_ms_per_volume": [], "ricecli_shift_s": [], "ricecli_clip_s": []}
    for _ in range(repeats):
        with torch.inference_mode():
            net(x)
            t = time.thread_time()
            for _ in range(4):
                net(x)
            out["torch_ms_per_volume"].append(round((time.thread_time() - t) / 64 * 1000, 2))
        for edges in ("shift", "clip"):
            clear_all()
            os.environ["RICENET_CACHE"] = tempfile.mkdtemp()
            t = time.thread_time()
            stem, method = incremental_for(model, engine, True, None)
            occlusion_maps(vol, engine, spec.channels, cube, stride, fill=0.0,
                           target="recurrence", classes=spec.classes, batch=16, edges=edges,
                           brain_mask=mask, incremental=stem, method=method)
            out[f"ricecli_{edges}_s"].append(round(time.thread_time() - t, 3))
    torch_s = float(np.median(out["torch_ms_per_volume"])) / 1000 * 1873
    for edges in ("shift", "clip"):
        out[f"work_ratio_{edges}"] = round(torch_s / float(np.median(out[f"ricecli_{edges}_s"])),
                                           2)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    torch.set_num_threads(2)
    return out


def machine() -> dict:
    """What a figure depends on: CPU model and SIMD flags, core count, library versions."""
    import platform
    from importlib import metadata

    info: dict = {"cpu_model": platform.processor() or platform.machine(),
                  "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        fields = {k.strip(): v.strip() for k, _, v in
                  (line.partition(":") for line in first.splitlines())}
        info["cpu_model"] = fields.get("model name", info["cpu_model"])
        info["simd_flags"] = sorted(f for f in fields.get("flags", "").split()
                                    if f.startswith(("sse4", "avx", "fma", "amx", "f16c")))
    except OSError:
        pass
    versions = {}
    for dist in ("torch", "onnxruntime", "onnx", "numpy", "monai-weekly", "monai", "captum"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    info["versions"] = versions
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cube-mm", type=float, default=16.0)
    ap.add_argument("--stride-mm", type=float, default=16.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of ricecli-shift, MONAI, "
                    "ricecli-clip, Captum (interleaved); ratios are per round, then the median")
    ap.add_argument("--only", default="ricecli,monai,captum")
    ap.add_argument("--edges", default="shift,clip", help="ricecli runs: shift (as MONAI), "
                    "clip (as Captum)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=True,
                    help="ricecli: exact incremental layers (default) or whole volumes")
    ap.add_argument("--depth", type=int, default=None,
                    help="incremental depth (default: chosen from the layers' work; 1 = stem)")
    ap.add_argument("--paper", type=int, default=0, help="paper architecture at N^3 instead")
    ap.add_argument("--cube-vox", type=int, default=8, help="--paper: cube and stride, voxels")
    ap.add_argument("--positions", type=int, default=16, help="--paper: positions timed")
    ap.add_argument("--members", type=int, default=1, help="ricecli ensemble members (copies "
                    "of the network; peers run one)")
    ap.add_argument("--case", default=None, help="an .npz (volume, mask) instead of the "
                    "template case (for machines without SimpleITK); --save-case writes one")
    ap.add_argument("--save-case", default=None)
    ap.add_argument("--out", default=None, help="also write the final JSON here")
    ap.add_argument("--single-thread-work", type=int, default=0, metavar="R", help="also R "
                    "interleaved rounds of one-thread CPU work: torch per volume vs ricecli's "
                    "whole map (a load-proof estimate of the quiet ratio)")
    args = ap.parse_args(argv)
    which = set(args.only.split(","))

    import torch

    torch.set_num_threads(args.threads)
    if args.paper:
        print(json.dumps(paper_run(args)))
        return 0
    from export.to_onnx import export_ensemble
    from ricecli.explain.incremental import incremental_for
    from ricecli.explain.occlusion import occlusion_maps
    from ricecli.explain.positions import mm_to_voxels
    from ricecli.inference.engine import OnnxRuntimeEngine
    from ricecli.inference.model import load_model
    from ricecli.memo import clear_all
    from ricecli.spec import PRESETS

    spec = PRESETS["edge"]
    if args.case:
        with np.load(args.case) as f:
            vol, mask = f["volume"], f["mask"]
    else:
        vol, mask = template_case(spec)
    if args.save_case:
        np.savez_compressed(args.save_case, volume=vol, mask=mask)
    net = network(spec, args.checkpoint)
    cube = mm_to_voxels(args.cube_mm, spec.model_space.spacing_mm[::-1])
    stride = mm_to_voxels(args.stride_mm, spec.model_space.spacing_mm[::-1])
    target = list(spec.classes).index("recurrence")
    res: dict = {"machine": machine(), "threads": args.threads, "cube_vox": cube,
                 "stride_vox": stride, "batch": args.batch, "shape_zyx": list(vol.shape[1:]),
                 "repeats": args.repeats, "order": [], "runs": {}}
    maps: dict[str, np.ndarray] = {}
    tmp = Path(tempfile.mkdtemp(prefix="occlusion-bench-"))
    x = torch.from_numpy(vol[None])

    def probs(inp):
        return torch.softmax(net(inp), dim=1)

    def shape_count(ceil: bool) -> int:
        return int(np.prod([len(range(0, s - c + 1, st)) + ((s - c) % st > 0) if not ceil
                            else int(np.ceil((s - c) / st)) + 1
                            for s, c, st in zip(vol.shape[1:], cube, stride, strict=False)]))

    runs: dict = {}
    if "ricecli" in which:
        path = tmp / "edge.onnx"
        export_ensemble([net] * args.members, spec, {"name": "bench-edge", "version": "0"}, path)
        model = load_model(path)
        engine = OnnxRuntimeEngine(model, threads=args.threads)

        def ricecli(edges: str):
            """One explain's occlusion from scratch: new runner, empty depth cache."""
            clear_all()
            os.environ["RICENET_CACHE"] = tempfile.mkdtemp(dir=tmp)
            stem, method = incremental_for(model, engine, args.incremental, args.depth)
            m = occlusion_maps(vol, engine, spec.channels, cube, stride, fill=0.0,
                               target="recurrence", classes=spec.classes, batch=args.batch,
                               edges=edges, brain_mask=mask, incremental=stem, method=method)
            n = m.positions["run"] + 1
            return m.maps["all"], n, {"positions": m.positions, "method": m.method}

        for edges in args.edges.split(","):
            runs[f"ricecli_{edges}"] = lambda e=edges: ricecli(e)
    if "monai" in which:
        from monai.visualize import OcclusionSensitivity

        def monai():
            occ = OcclusionSensitivity(net, mask_size=cube, n_batch=args.batch, mode=0.0,
                                       overlap=1.0 - stride[0] / cube[0], verbose=False)
            with torch.no_grad():
                p0 = probs(x)[0, target].item()
                out, _ = occ(x)
            return p0 - out[0, target].numpy(), shape_count(False) + 1, {}

        runs["monai"] = monai
    if "captum" in which:
        from captum.attr import Occlusion

        def captum():
            with torch.no_grad():
                attr = Occlusion(probs).attribute(
                    x, sliding_window_shapes=(vol.shape[0], *cube),
                    strides=(vol.shape[0], *stride), baselines=0.0, target=target,
                    perturbations_per_eval=args.batch)
            return attr[0, 0].numpy(), shape_count(True) + 1, {}

        runs["captum"] = captum
    order = [n for n in ("ricecli_shift", "monai", "ricecli_clip", "captum") if n in runs]
    res["order"] = order
    for r in range(args.repeats):  # A B A B: a drift in the machine's load hits both sides
        for name in order:
            load = os.getloadavg()[0]
            t, cpu = time.perf_counter(), time.process_time()
            out, volumes, extra = runs[name]()
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            rec = res["runs"].setdefault(name, {"s": [], "cpu_s": [], "load_1min": [],
                                                "volumes": volumes, **extra})
            rec["s"].append(round(seconds, 3))
            rec["cpu_s"].append(round(cpu, 3))
            rec["load_1min"].append([round(load, 2), round(os.getloadavg()[0], 2)])
            maps.setdefault(name, out)
            print(f"round {r + 1} {name:14s} {seconds:8.2f} s (cpu {cpu:7.2f} s)  {volumes:5d} "
                  f"volumes  load {load:.2f}", flush=True)
    for rec in res["runs"].values():
        rec["median_s"] = round(float(np.median(rec["s"])), 3)
    for ours, peer in (("ricecli_shift", "monai"), ("ricecli_clip", "captum")):
        if ours in maps and peer in maps:
            ratios = [p / o for p, o in zip(res["runs"][peer]["s"], res["runs"][ours]["s"],
                                            strict=True)]
            res[f"speedup_vs_{peer}"] = [round(v, 2) for v in ratios]
            res[f"speedup_vs_{peer}_median"] = round(float(np.median(ratios)), 2)
            cpu_ratios = [p / o for p, o in zip(res["runs"][peer]["cpu_s"],
                                                res["runs"][ours]["cpu_s"], strict=True)]
            res[f"cpu_time_ratio_vs_{peer}_median"] = round(float(np.median(cpu_ratios)), 2)
            res[f"max_abs_diff_vs_{peer}"] = float(np.abs(maps[ours] - maps[peer]).max())
            res[f"map_max_{peer}"] = float(np.abs(maps[peer]).max())
            print(f"ricecli {ours[8:]} vs {peer}: {res[f'speedup_vs_{peer}']} -> median "
                  f"{res[f'speedup_vs_{peer}_median']}x, max |diff| "
                  f"{res[f'max_abs_diff_vs_{peer}']:.1e}", flush=True)
    if args.single_thread_work and "ricecli" in which:
        res["single_thread_work"] = single_thread_work(net, vol, mask, cube, stride, spec, model,
                                                       args.single_thread_work)
        print(f"one-thread work: {res['single_thread_work']}", flush=True)
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(res)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

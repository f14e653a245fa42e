"""ricecli explain's occlusion vs MONAI OcclusionSensitivity vs Captum Occlusion (torch CPU).

    python benchmarks/occlusion.py [--threads 2] [--cube-mm 16] [--stride-mm 16] [--batch 16]
                                   [--only ricecli,monai,captum] [--checkpoint CKPT]
                                   [--no-incremental] [--members 1]

Same network (the `edge` ResNet-18, random weights unless --checkpoint; exported to ONNX for
ricecli), same volume (a template-based case in edge model space 56x64x56: template T1 z-scored
in the brain for both T1c channels, a bright lesion in the event channel, a dose blob / 60 Gy,
all 0 outside the brain, as prepared cases are), same cube, stride, fill 0 and target
(recurrence). ricecli runs twice: edges=shift (MONAI's windows) and edges=clip (Captum's),
each compared with its peer. Peers run torch eager with the same thread count and batch.
ricecli runs stem-incrementally (explain's default; --no-incremental: whole volumes); its time
includes splitting the graph and opening the extra ONNX Runtime sessions.
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

    from ricecli.template import load_template, model_space_grid, template_mask_in

    grid = model_space_grid(spec.model_space)
    t1 = sitk.GetArrayFromImage(sitk.Resample(load_template().t1, grid, sitk.Transform(),
                                              sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    mask = sitk.GetArrayFromImage(template_mask_in(spec.model_space)).astype(bool)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cube-mm", type=float, default=16.0)
    ap.add_argument("--stride-mm", type=float, default=16.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--only", default="ricecli,monai,captum")
    ap.add_argument("--edges", default="shift,clip", help="ricecli runs: shift (as MONAI), "
                    "clip (as Captum)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=True,
                    help="ricecli: exact incremental stem (default) or whole volumes")
    ap.add_argument("--members", type=int, default=1, help="ricecli ensemble members (copies "
                    "of the network; peers run one)")
    ap.add_argument("--maps", default=None, help="folder to keep maps between --only runs")
    ap.add_argument("--case", default=None, help="an .npz (volume, mask) instead of the "
                    "template case (for machines without SimpleITK); --save-case writes one")
    ap.add_argument("--save-case", default=None)
    args = ap.parse_args(argv)
    which = set(args.only.split(","))

    import torch

    torch.set_num_threads(args.threads)
    from export.to_onnx import export_ensemble
    from ricecli.engine import OnnxRuntimeEngine
    from ricecli.explain import incremental_for, mm_to_voxels, occlusion_maps
    from ricecli.model import load_model
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
    res: dict = {"threads": args.threads, "cube_vox": cube, "stride_vox": stride,
                 "batch": args.batch, "shape_zyx": list(vol.shape[1:]), "cpu": os.cpu_count()}
    maps: dict[str, np.ndarray] = {}

    def report(name: str, seconds: float, volumes: int) -> None:
        res[name] = {"s": round(seconds, 2), "volumes": volumes,
                     "volumes_per_s": round(volumes / seconds, 2)}
        print(f"{name:16s} {seconds:8.1f} s  {volumes:5d} volumes  "
              f"{volumes / seconds:6.2f} volumes/s", flush=True)

    if "ricecli" in which:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "edge.onnx"
            export_ensemble([net] * args.members, spec, {"name": "bench-edge", "version": "0"},
                            path)
            model = load_model(path)
            engine = OnnxRuntimeEngine(model, threads=args.threads)
            for edges in args.edges.split(","):
                t = time.perf_counter()
                stem, method = incremental_for(model, engine, args.incremental)
                m = occlusion_maps(vol, engine, spec.channels, cube, stride, fill=0.0,
                                   target="recurrence", classes=spec.classes, batch=args.batch,
                                   edges=edges, brain_mask=mask, incremental=stem,
                                   method=method)
                report(f"ricecli_{edges}", time.perf_counter() - t, m.positions["run"] + 1)
                res[f"ricecli_{edges}"].update(positions=m.positions, method=m.method)
                maps[f"ricecli_{edges}"] = m.maps["all"]
    x = torch.from_numpy(vol[None])

    def probs(inp):
        return torch.softmax(net(inp), dim=1)

    if "monai" in which:
        from monai.visualize import OcclusionSensitivity

        occ = OcclusionSensitivity(net, mask_size=cube, n_batch=args.batch, mode=0.0,
                                   overlap=1.0 - stride[0] / cube[0], verbose=False)
        t = time.perf_counter()
        with torch.no_grad():
            p0 = probs(x)[0, target].item()
            out, _ = occ(x)
        n = int(np.prod([len(range(0, s - c + 1, st)) + ((s - c) % st > 0)
                         for s, c, st in zip(vol.shape[1:], cube, stride, strict=False)]))
        report("monai", time.perf_counter() - t, n + 1)
        maps["monai"] = p0 - out[0, target].numpy()
    if "captum" in which:
        from captum.attr import Occlusion

        t = time.perf_counter()
        with torch.no_grad():
            attr = Occlusion(probs).attribute(
                x, sliding_window_shapes=(vol.shape[0], *cube), strides=(vol.shape[0], *stride),
                baselines=0.0, target=target, perturbations_per_eval=args.batch)
        n = int(np.prod([int(np.ceil((s - c) / st)) + 1
                         for s, c, st in zip(vol.shape[1:], cube, stride, strict=False)]))
        report("captum", time.perf_counter() - t, n + 1)
        maps["captum"] = attr[0, 0].numpy()
    if args.maps:  # piecewise runs (each < 3 min on a shared machine) meet here
        folder = Path(args.maps)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in maps.items():
            np.save(folder / f"{name}.npy", arr)
            (folder / f"{name}.json").write_text(json.dumps(res[name]))
        for f in folder.glob("*.npy"):
            if f.stem not in maps:
                maps[f.stem] = np.load(f)
                res[f.stem] = json.loads(f.with_suffix(".json").read_text())
    for ours, peer in (("ricecli_shift", "monai"), ("ricecli_clip", "captum")):
        if ours in res and peer in res:
            res[f"speedup_vs_{peer}"] = round(res[peer]["s"] / res[ours]["s"], 2)
            res[f"max_abs_diff_vs_{peer}"] = float(np.abs(maps[ours] - maps[peer]).max())
            res[f"map_max_{peer}"] = float(np.abs(maps[peer]).max())
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

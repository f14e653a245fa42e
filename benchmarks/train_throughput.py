"""Training throughput (cases/s) and how much of a step waits for data.

Synthetic edge-size cases go through the real pieces: the prepared-case cache (.npz
written and read back by train.data), the in-memory cohort, and train.loop.train_step
with augmentation, timed with a device sync around the data part (gather + augment) and
the compute part (forward, backward, Adam). Final line: one JSON object.

  python benchmarks/train_throughput.py --preset edge --device cpu --batch-size 8 --steps 6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/ beside benchmarks/

from train.data import load_cohort, read_manifest
from train.dist import DistInfo, resolve_device
from train.fit import FitConfig, run_spec
from train.loop import StepPlan, StepTimes, epoch_order, key, train_step
from train.model import arch_config, build_network
from train.synthetic import write_synthetic_cohort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="edge", choices=["edge", "paper", "tiny"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--no-augment", action="store_true")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    cfg = FitConfig(manifest="", out="", preset=args.preset)
    spec = run_spec(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = write_synthetic_cohort(Path(tmp) / "d", spec, args.cases, 0,
                                          Path(tmp) / "cache")
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_cohort(read_manifest(manifest), spec, Path(tmp) / "cache", workers=4)
        load_s = time.perf_counter() - t0
    info = DistInfo(rank=0, world=1, local_rank=0, device=dev)
    x = torch.from_numpy(data.x).to(dev)
    y = torch.from_numpy(data.y).to(dev)
    torch.manual_seed(0)
    net = build_network(arch_config(args.preset), len(spec.channels)).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    plan = StepPlan(batch=args.batch_size, micro=args.batch_size, spacing_mm=3.0,
                    t1=(True, True, False), augment=not args.no_augment,
                    amp=args.amp and dev.type == "cuda")
    order = epoch_order(data.y, args.batch_size, key(0))
    warm = StepTimes(sync=True)
    for s in range(2):  # warm-up (allocator, cudnn autotune)
        train_step(net, opt, x, y, order[s % len(order)], plan, info, (0, 0, 0, s), warm)
    times = StepTimes(sync=True)
    t0 = time.perf_counter()
    for s in range(args.steps):
        train_step(net, opt, x, y, order[s % len(order)], plan, info, (0, 0, 1, s), times)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    result = {
        "benchmark": "train_throughput", "preset": args.preset, "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "steps": args.steps, "augment": plan.augment, "amp": plan.amp,
        "shape_zyx": list(spec.model_space.shape_zyx),
        "cases_per_s": round(times.cases / wall, 2),
        "step_s": round(wall / args.steps, 4),
        "data_s_per_step": round(times.data_s / args.steps, 4),
        "compute_s_per_step": round(times.compute_s / args.steps, 4),
        "data_wait_fraction": round(times.fraction(), 4),
        "cache_load_ms_per_case": round(1000 * load_s / args.cases, 1),
        "cache_write_ms_per_case": round(1000 * write_s / args.cases, 1),
        "cohort_ram_mb_per_case": round(data.x[0].nbytes / 2**20, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

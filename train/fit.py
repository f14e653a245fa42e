"""`python -m train fit`: prepare and cache the cohort, then train K fold models.

RUN/config.json the run's settings; RUN/folds.json the folds; per fold RUN/fold{k}/ holds
best.safetensors (best validation macro F1), last.safetensors + last.state.pt (optimiser,
epoch, history; read back with torch.load(weights_only=True)), log.csv, log.json and
val_predictions.csv; RUN/summary.json the CV result. When every fold has its validation
predictions, RUN/oof.csv gathers them (out-of-fold: each case scored by the fold model that
did not train on it) and RUN/calibration.json holds the temperature and conformal threshold
fitted on them (train/calibrate.py), which export/to_onnx.py puts into the model's spec.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file

from ricecli.errors import InputError, OutputError
from ricecli.io.files import write_atomic, write_text_atomic
from ricecli.spec import CHANNELS, ModelSpace, Spec, preset_spec
from train import dist as D
from train.checkpoint import save_checkpoint
from train.data import CohortArrays, default_cache_dir, load_cohort, prepare_cohort, read_manifest
from train.folds import load_folds, make_folds, save_folds, split_indices
from train.loop import StepPlan, StepTimes, epoch_order, key, predict, train_step
from train.metrics import binary_metrics
from train.model import arch_config, build_network

console = Console(stderr=True)
RESUME_OVERRIDES = ("epochs", "max_minutes", "device", "workers", "cache", "only_folds", "amp")


@dataclass
class FitConfig:
    manifest: str
    out: str
    preset: str = "edge"
    channels: tuple[str, ...] = CHANNELS
    folds: int = 5
    epochs: int = 100
    seed: int = 0
    batch_size: int = 16
    micro_batch: int = 0          # 0: batch_size / world (one chunk per rank)
    lr: float = 3e-4
    workers: int = 4
    device: str = "auto"
    cache: str = ""
    amp: bool | None = None       # None: on for CUDA
    max_minutes: float = 0.0      # 0: no time box
    folds_file: str = ""
    size_xyz: tuple[int, int, int] | None = None
    spacing_mm: float | None = None
    augment: bool = True
    val_every: int = 1
    checkpoint_every_s: float = 60.0
    only_folds: list[int] = field(default_factory=list)
    resume: bool = False


def run_spec(cfg: FitConfig) -> Spec:
    """The preset's spec (tiny uses edge's) with the run's channels and optional grid."""
    spec = preset_spec(cfg.preset).with_channels(cfg.channels)
    if cfg.size_xyz or cfg.spacing_mm:
        ms = spec.model_space
        size = tuple(cfg.size_xyz or ms.size_xyz)
        sp = float(cfg.spacing_mm) if cfg.spacing_mm else ms.spacing_mm[0]
        spec = replace(spec, model_space=ModelSpace(template=ms.template, spacing_mm=(sp,) * 3,
                                                    size_xyz=size, center_mm=ms.center_mm))
    return spec


def _check_out(cfg: FitConfig) -> FitConfig:
    out = Path(cfg.out)
    if cfg.resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise OutputError("nothing to resume (no config.json)", out,
                              "start the run without --resume")
        old = json.loads(saved.read_text())
        for k in RESUME_OVERRIDES:
            old[k] = getattr(cfg, k)
        old["channels"] = tuple(old["channels"])
        old["size_xyz"] = tuple(old["size_xyz"]) if old.get("size_xyz") else None
        return FitConfig(**{**old, "resume": True})
    if out.exists() and any(out.iterdir()):
        raise OutputError("run folder exists and is not empty", out,
                          "choose a new --out, or add --resume to continue that run")
    return cfg


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, default=str) + "\n")


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _save_state(path: Path, state: dict) -> None:
    with write_atomic(path) as tmp:
        torch.save(state, tmp)


@dataclass
class FoldContext:
    cfg: FitConfig
    spec: Spec
    arch: dict
    info: D.DistInfo
    data: CohortArrays
    x: torch.Tensor
    y: torch.Tensor
    folds: dict
    records: list
    amp: bool


def train_fold(ctx: FoldContext, fold: int, deadline: float, progress: Progress | None) -> dict:
    """Train one fold to cfg.epochs (or the deadline); returns its summary."""
    cfg, info = ctx.cfg, ctx.info
    fdir = Path(cfg.out) / f"fold{fold}"
    if info.main:
        fdir.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = split_indices(ctx.records, ctx.folds, fold)
    labels = ctx.data.y[train_idx]
    world_micro = cfg.micro_batch or max(1, cfg.batch_size // info.world)
    if cfg.batch_size % world_micro or (cfg.batch_size // world_micro) % info.world:
        raise InputError(f"--batch-size {cfg.batch_size} must split into chunks of "
                         f"--micro-batch {world_micro}, a multiple of {info.world} ranks")
    plan = StepPlan(batch=cfg.batch_size, micro=world_micro,
                    spacing_mm=min(ctx.spec.model_space.spacing_mm),
                    t1=tuple(c != "dose" for c in ctx.spec.channels), augment=cfg.augment,
                    amp=ctx.amp)
    torch.manual_seed(key(cfg.seed, fold))
    net = build_network(ctx.arch, len(ctx.spec.channels)).to(info.device)
    if info.device.type == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    state = {"epoch": 0, "best": {"val_macro_f1": -1.0, "val_loss": math.inf, "epoch": -1},
             "history": [], "best_probs": [], "seconds": 0.0}
    last, last_state = fdir / "last.safetensors", fdir / "last.state.pt"
    if cfg.resume and last.exists() and last_state.exists():
        net.load_state_dict(load_file(str(last), device=str(info.device)))
        state = torch.load(last_state, map_location=info.device, weights_only=True)
        opt.load_state_dict(state.pop("optimizer"))
        torch.set_rng_state(state.pop("torch_rng"))
    model = net
    if info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    config = {**asdict(cfg), "fold": fold}
    gtrain = torch.as_tensor(train_idx)
    times = StepTimes()
    task = progress.add_task(f"fold {fold}", total=cfg.epochs, completed=state["epoch"],
                             status="") if progress else None
    t_save = time.perf_counter()
    stopped_by_time = False
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        if D.agree(time.time() > deadline, info) and state["best"]["epoch"] >= 0:
            stopped_by_time = True
            break
        t0 = time.perf_counter()
        order = epoch_order(labels, cfg.batch_size, key(cfg.seed, fold, epoch))
        loss_sum = torch.zeros((), device=info.device)
        for step in range(order.shape[0]):
            loss_sum += train_step(model, opt, ctx.x, ctx.y, gtrain[order[step]], plan, info,
                                   (cfg.seed, fold, epoch, step), times)
        train_loss = float(D.all_mean(loss_sum / order.shape[0], info))
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5)}
        final = epoch + 1 == cfg.epochs or D.agree(time.time() > deadline, info)
        if (epoch + 1) % cfg.val_every == 0 or final:
            D.broadcast_buffers(net, info)
            probs = predict(net, ctx.x, val_idx, 2 * world_micro, ctx.amp, info.device)
            yv = ctx.data.y[val_idx]
            vloss = float(-np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-7, 1)).mean())
            m = binary_metrics(yv, probs.argmax(1), probs[:, 1])
            row.update(val_loss=round(vloss, 5), val_macro_f1=round(m["macro_f1"], 5),
                       val_accuracy=round(m["accuracy"], 5), val_auc=round(m["auc"], 5))
            b = state["best"]
            if m["macro_f1"] > b["val_macro_f1"] or (
                    m["macro_f1"] == b["val_macro_f1"] and vloss < b["val_loss"]):
                state["best"] = {"val_macro_f1": m["macro_f1"], "val_loss": vloss,
                                 "val_auc": m["auc"], "epoch": epoch + 1}
                state["best_probs"] = probs.tolist()  # [n, 2]: p(RICE), p(recurrence)
                if info.main:
                    save_checkpoint(fdir / "best.safetensors", net, ctx.spec, ctx.arch, fold,
                                    state["best"], config)
        dt = time.perf_counter() - t0
        state["seconds"] += dt
        row.update(seconds=round(dt, 3), cases_per_s=round(order.numel() / dt, 2),
                   data_fraction=round(times.fraction(), 4))
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if info.main:
            _append_csv(fdir / "log.csv", row)
            _write_json(fdir / "log.json", state["history"])
            if final or time.perf_counter() - t_save > cfg.checkpoint_every_s:
                _save_last(fdir, net, opt, state, ctx, fold, config)
                t_save = time.perf_counter()
        if progress:
            progress.update(task, advance=1, status=f"loss {train_loss:.3f} "
                            f"F1 {row.get('val_macro_f1', float('nan')):.3f}")
    spread = D.param_spread(net, info)
    if info.main:
        _save_last(fdir, net, opt, state, ctx, fold, config, stopped_by_time)
        _write_val_predictions(fdir, ctx, val_idx, state["best_probs"])
    return {"fold": fold, **state["best"], "epochs_done": state["epoch"],
            "seconds": round(state["seconds"], 2), "stopped_by_time": stopped_by_time,
            "cases_per_s": round(times.cases * info.world / max(state["seconds"], 1e-9), 2),
            "data_fraction": round(times.fraction(), 4), "rank_param_spread": spread}


def _save_last(fdir: Path, net, opt, state: dict, ctx: FoldContext, fold: int, config: dict,
               stopped_by_time: bool = False) -> None:
    save_checkpoint(fdir / "last.safetensors", net, ctx.spec, ctx.arch, fold,
                    {**state["best"], "epochs_done": state["epoch"],
                     "stopped_by_time": stopped_by_time}, config)
    _save_state(fdir / "last.state.pt", {**state, "optimizer": opt.state_dict(),
                                         "torch_rng": torch.get_rng_state()})


def _write_val_predictions(fdir: Path, ctx: FoldContext, val_idx: list[int], probs: list) -> None:
    """The best epoch's validation softmax (9 significant digits: calibration recovers logits
    from them); older resumed states hold p(recurrence) only."""
    with (fdir / "val_predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "label", "p_recurrence", "p_RICE"])
        for i, p in zip(val_idx, probs, strict=True):
            p_rice, p_rec = (p[0], p[1]) if isinstance(p, (list, tuple)) else (1.0 - p, p)
            w.writerow([ctx.data.case_ids[i], int(ctx.data.y[i]), f"{p_rec:.9g}",
                        f"{p_rice:.9g}"])


def run_fit(cfg: FitConfig) -> dict:
    """The whole fit command: returns RUN/summary.json's content (on every rank)."""
    t_start = time.time()
    cfg = _check_out(cfg)
    info = D.setup(cfg.device)
    try:
        return _run(cfg, info, t_start)
    finally:
        D.cleanup(info)


def _run(cfg: FitConfig, info: D.DistInfo, t_start: float) -> dict:
    out = Path(cfg.out)
    records = [r for r in read_manifest(cfg.manifest) if r.split == "cv"]
    spec, arch = run_spec(cfg), arch_config(cfg.preset)
    cache = cfg.cache or str(default_cache_dir())
    D.barrier(info)  # every rank has checked the output folder before rank 0 writes in it
    prep = {}
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:
            _write_json(out / "config.json", asdict(cfg))
        console.log(f"preparing {len(records)} cases into {cache} ({cfg.workers} workers)")
        prep = prepare_cohort(records, spec, cache, cfg.workers)
        console.log(f"prepared {prep['prepared']}, cached already {prep['cached']}, "
                    f"{prep['wall_s']} s")
    D.barrier(info)
    if cfg.resume:
        folds = load_folds(out / "folds.json", records)
    elif cfg.folds_file:
        folds = load_folds(cfg.folds_file, records)
    else:
        folds = make_folds(records, cfg.folds, cfg.seed)
    if info.main and not cfg.resume:
        save_folds(folds, out / "folds.json")
    t_load = time.perf_counter()
    data = load_cohort(records, spec, cache, cfg.workers)
    x = torch.from_numpy(data.x).to(info.device)
    y = torch.from_numpy(data.y).to(info.device)
    load_s = time.perf_counter() - t_load
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cuda = info.device.type == "cuda"
    amp = cuda if cfg.amp is None else (cfg.amp and cuda)
    ctx = FoldContext(cfg, spec, arch, info, data, x, y, folds, records, amp)
    todo = cfg.only_folds or list(range(folds["k"]))
    end = t_start + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    results = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} epochs {task.fields[status]}"),
                        TimeElapsedColumn(), console=console, disable=not info.main)
    with progress:
        for n, fold in enumerate(todo):
            deadline = time.time() + (end - time.time()) / (len(todo) - n)
            results.append(train_fold(ctx, fold, deadline, progress))
    f1 = [r["val_macro_f1"] for r in results]
    summary = {
        "channels": list(spec.channels), "preset": cfg.preset, "device": str(info.device),
        "world_size": info.world, "n_cv_cases": len(records), "folds": results,
        "cv_macro_f1_mean": float(np.mean(f1)), "cv_macro_f1_sd": float(np.std(f1, ddof=1))
        if len(f1) > 1 else 0.0, "prepare": prep, "load_s": round(load_s, 2),
        "wall_s": round(time.time() - t_start, 1),
    }
    if info.main:
        summary["calibration"] = _calibrate(out, folds["k"])
        _write_json(out / "summary.json", summary)
        console.log(f"CV macro F1 {summary['cv_macro_f1_mean']:.3f} ± "
                    f"{summary['cv_macro_f1_sd']:.3f} over {len(f1)} folds, "
                    f"{summary['wall_s']} s -> {out}")
    return summary


def _calibrate(out: Path, k: int) -> dict | None:
    """Fit the OOF calibration once every fold has validation predictions (else None)."""
    from train.calibrate import calibrate_run

    if not all((out / f"fold{f}" / "val_predictions.csv").is_file() for f in range(k)):
        console.log("calibration: not every fold has validation predictions yet; skipped")
        return None
    record = calibrate_run(out)
    t, o = record["calibration"]["temperature"], record["oof"]
    console.log(f"calibration on {o['n_cases']} out-of-fold cases: temperature {t:.3f}, "
                f"NLL {o['nll_raw']:.3f} -> {o['nll_calibrated']:.3f}, ECE {o['ece_raw']:.3f} "
                f"-> {o['ece_calibrated']:.3f} -> {out / 'calibration.json'}")
    return record

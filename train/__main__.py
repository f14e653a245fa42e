"""`python -m train fit | evaluate | ablate` (torchrun-compatible: `torchrun ... -m train fit`)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import typer

from ricecli.cli import ReadableCommand, ReadableGroup, run_app
from ricecli.errors import RicenetError
from ricecli.spec import CHANNELS, TRAINING_PRESETS

app = typer.Typer(cls=ReadableGroup, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None,  # plain help, as ricecli's (no cut option names)
                  help="Train, evaluate and ablate ricenet models (RICE-NET protocol).")
TRAINING_STACK = ("torch", "monai", "safetensors")  # what every command here imports
TRAIN_FIX = ("install the training extra from the checkout: pip install -e '.[train]' "
             "(PyTorch, MONAI; CUDA builds: see pytorch.org)")


def _require_training_stack() -> None:
    """Exit 2 naming the extra to install when torch/monai are missing (not an internal
    ModuleNotFoundError from deep inside train/)."""
    missing = []
    for name in TRAINING_STACK:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise RicenetError(f"training needs {', '.join(missing)}, which "
                           f"{'is' if len(missing) == 1 else 'are'} not installed", fix=TRAIN_FIX)


def _channels(text: str) -> tuple[str, ...]:
    chans = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in chans if c not in CHANNELS]
    if bad or not chans:
        raise RicenetError(f"unknown channel(s) {', '.join(bad) or '(none)'}",
                           fix=f"use a comma-separated subset of {','.join(CHANNELS)}")
    return chans


def _size(text: str) -> tuple[int, int, int] | None:
    if not text:
        return None
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3 or min(parts) < 8:
        raise RicenetError(f"--size-xyz {text!r} needs three sizes >= 8", fix="e.g. 56,64,56")
    return tuple(parts)


def _config(**kw):
    from train.fit import FitConfig

    if kw["preset"] not in TRAINING_PRESETS:
        raise RicenetError(f"unknown preset {kw['preset']!r}",
                           fix=f"use one of {', '.join(TRAINING_PRESETS)}")
    kw["channels"] = _channels(kw["channels"])
    kw["size_xyz"] = _size(kw["size_xyz"])
    kw["spacing_mm"] = kw["spacing_mm"] or None
    kw["only_folds"] = [int(v) for v in kw.pop("fold").split(",") if v.strip()]
    kw["amp"] = {"auto": None, "on": True, "off": False}[kw["amp"]]
    return FitConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


FIT_OPTS = dict(
    manifest=typer.Option(..., help="manifest.csv: case_id,post_op,event,dose,label[,split]"),
    out=typer.Option(..., help="run folder (new, or existing with --resume)"),
    preset=typer.Option("edge", help=f"{' | '.join(TRAINING_PRESETS)} (architecture + space)"),
    channels=typer.Option(",".join(CHANNELS), help="comma-separated subset of the channels"),
    folds=typer.Option(5, help="cross-validation folds (patient-level, stratified)"),
    epochs=typer.Option(100, help="epochs per fold"),
    seed=typer.Option(0),
    batch_size=typer.Option(16, help="global batch (all ranks together)"),
    micro_batch=typer.Option(0, help="cases per forward pass (0: batch / ranks)"),
    lr=typer.Option(3e-4, help="Adam learning rate"),
    workers=typer.Option(min(8, os.cpu_count() or 1), help="processes preparing cases"),
    device=typer.Option("auto", help="auto | cpu | cuda"),
    cache=typer.Option("", help="prepared-case cache (default ~/.cache/ricenet/prepared)"),
    amp=typer.Option("auto", help="bf16 autocast: auto (on for CUDA) | on | off"),
    max_minutes=typer.Option(0.0, help="time box for all folds together (0: none)"),
    folds_file=typer.Option("", help="reuse these folds (folds.json of another run)"),
    size_xyz=typer.Option("", help="override the model-space grid size x,y,z"),
    spacing_mm=typer.Option(0.0, help="override the model-space spacing (isotropic mm)"),
    augment=typer.Option(True, help="augmentation on/off"),
    val_every=typer.Option(1, help="validate every N epochs"),
    fold=typer.Option("", help="train only these folds, e.g. 0,2 (default all)"),
)


@app.command(cls=ReadableCommand)
def fit(manifest: Path = FIT_OPTS["manifest"], out: Path = FIT_OPTS["out"],
        preset: str = FIT_OPTS["preset"], channels: str = FIT_OPTS["channels"],
        folds: int = FIT_OPTS["folds"], epochs: int = FIT_OPTS["epochs"],
        seed: int = FIT_OPTS["seed"], batch_size: int = FIT_OPTS["batch_size"],
        micro_batch: int = FIT_OPTS["micro_batch"], lr: float = FIT_OPTS["lr"],
        workers: int = FIT_OPTS["workers"], device: str = FIT_OPTS["device"],
        cache: str = FIT_OPTS["cache"], amp: str = FIT_OPTS["amp"],
        max_minutes: float = FIT_OPTS["max_minutes"], folds_file: str = FIT_OPTS["folds_file"],
        size_xyz: str = FIT_OPTS["size_xyz"], spacing_mm: float = FIT_OPTS["spacing_mm"],
        augment: bool = FIT_OPTS["augment"], val_every: int = FIT_OPTS["val_every"],
        fold: str = FIT_OPTS["fold"],
        resume: bool = typer.Option(False, help="continue RUN from its last checkpoints")) -> None:
    """Prepare (cached), then train K fold models with patient-level stratified CV."""
    _require_training_stack()
    cfg = _config(**dict(locals()))
    from train.fit import run_fit

    run_fit(cfg)


@app.command("fit-config", hidden=True, cls=ReadableCommand)
def fit_config(path: Path) -> None:
    """Run a fit from a FitConfig JSON (used by ablate --jobs)."""
    _require_training_stack()
    from train.fit import FitConfig, run_fit

    d = json.loads(path.read_text())
    d["channels"] = tuple(d["channels"])
    d["size_xyz"] = tuple(d["size_xyz"]) if d.get("size_xyz") else None
    run_fit(FitConfig(**d))


@app.command(cls=ReadableCommand)
def evaluate(run: Path = typer.Option(..., help="run folder written by fit"),
             manifest: Path = typer.Option(..., help="manifest with the cases to score"),
             split: str = typer.Option("test", help="test (held out, ensemble) | cv (out-of-fold)"),
             cache: str = typer.Option("", help="prepared-case cache (default: the run's)"),
             device: str = typer.Option("auto"),
             workers: int = typer.Option(min(8, os.cpu_count() or 1)),
             bootstrap: int = typer.Option(2000, help="bootstrap resamples for 95% CIs"),
             seed: int = typer.Option(0)) -> None:
    """Fold ensemble (majority vote and mean probability) with bootstrap 95% CIs."""
    _require_training_stack()
    from train.evaluate import run_evaluate

    run_evaluate(run, manifest, split, cache, device, workers, bootstrap, seed)


@app.command(cls=ReadableCommand)
def ablate(manifest: Path = FIT_OPTS["manifest"], out: Path = FIT_OPTS["out"],
           preset: str = FIT_OPTS["preset"], folds: int = FIT_OPTS["folds"],
           epochs: int = FIT_OPTS["epochs"], seed: int = FIT_OPTS["seed"],
           batch_size: int = FIT_OPTS["batch_size"], lr: float = FIT_OPTS["lr"],
           workers: int = FIT_OPTS["workers"], device: str = FIT_OPTS["device"],
           cache: str = FIT_OPTS["cache"], amp: str = FIT_OPTS["amp"],
           max_minutes: float = FIT_OPTS["max_minutes"], size_xyz: str = FIT_OPTS["size_xyz"],
           spacing_mm: float = FIT_OPTS["spacing_mm"], augment: bool = FIT_OPTS["augment"],
           val_every: int = FIT_OPTS["val_every"],
           jobs: int = typer.Option(1, help="subsets trained at once (processes; GPU: 3-4)"),
           bootstrap: int = typer.Option(1000, help="bootstrap resamples for test CIs")) -> None:
    """All 7 channel subsets on the same folds -> DIR/ablation.md and ablation.json."""
    kw = {k: v for k, v in locals().items() if k not in ("jobs", "bootstrap")}
    _require_training_stack()
    from train.ablate import run_ablate

    cfg = _config(**kw, channels=",".join(CHANNELS), micro_batch=0, folds_file="", fold="")
    run_ablate(cfg, jobs=jobs, n_boot=bootstrap)


def main() -> None:
    run_app(app, prog_name="python -m train")


if __name__ == "__main__":
    main()

"""A training run as export reads it: its fold checkpoints, one model card from them and the
run folder, and the calibration `python -m train fit` wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ricecli.errors import InputError
from ricecli.inference.model import file_sha256
from ricecli.spec import Calibration, Spec


def fold_checkpoints(run: Path, folds: str = "all") -> list[Path]:
    """RUN/fold{k}/best.safetensors for the chosen folds (all that exist, or a list)."""
    if not run.is_dir():
        raise InputError("run folder not found", run, fix="pass --run RUN written by "
                         "'python -m train fit'")
    if folds == "all":
        found = sorted(run.glob("fold*/best.safetensors"),
                       key=lambda p: int(p.parent.name[4:]) if p.parent.name[4:].isdigit() else 0)
        if not found:
            raise InputError("no fold*/best.safetensors in the run folder", run,
                             fix="train first ('python -m train fit') or pass the right --run")
        return found
    try:
        ks = [int(k) for k in folds.split(",") if k.strip()]
    except ValueError:
        raise InputError(f"--folds {folds!r} is not 'all' or a list like 0,1,2",
                         fix="pass --folds all or --folds 0,2") from None
    paths = [run / f"fold{k}" / "best.safetensors" for k in ks]
    for p in paths:
        if not p.is_file():
            raise InputError("fold checkpoint not found", p, fix="check --folds against the run")
    return paths


def load_fold_members(paths: list[Path]) -> tuple[list, Spec, list]:
    """Load checkpoints; all must share one spec and architecture."""
    from train.checkpoint import load_checkpoint

    checkpoints = []
    for p in paths:
        try:
            checkpoints.append(load_checkpoint(p))
        except (ValueError, OSError) as err:
            raise InputError(f"not a readable ricenet checkpoint ({err})", p,
                             fix="pass a run folder written by 'python -m train fit'") from None
    first = checkpoints[0]
    for p, ck in zip(paths, checkpoints, strict=True):
        if ck.spec != first.spec or ck.arch != first.arch:
            raise InputError("checkpoint spec or architecture differs from the first fold's", p,
                             fix="export folds of one run only")
    return [ck.network() for ck in checkpoints], first.spec, checkpoints


def run_card(run: Path, paths: list[Path], checkpoints: list, name: str | None) -> dict:
    """Model card from the checkpoints and the run folder (folds.json, summary.json)."""
    members = [{"fold": ck.fold, "metrics": ck.metrics, "source": str(p.relative_to(run)),
                "sha256": file_sha256(p)} for p, ck in zip(paths, checkpoints, strict=True)]
    metrics: dict[str, dict] = {}
    keys = {k for ck in checkpoints for k, v in ck.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k in sorted(keys):
        vals = [float(ck.metrics[k]) for ck in checkpoints if isinstance(ck.metrics.get(k),
                                                                         (int, float))]
        metrics[f"val_{k}"] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)),
                               "n": len(vals)}
    training = {"run": run.name, "arch": checkpoints[0].arch, "config": checkpoints[0].config,
                "code_version": checkpoints[0].code_version}
    for fname, key in (("folds.json", "folds"), ("summary.json", "summary")):
        try:
            data = json.loads((run / fname).read_text())
        except (OSError, ValueError):
            continue
        if key == "folds" and isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "val"}
        training[key] = data
    return {"name": name or run.resolve().name, "members": members, "metrics": metrics,
            "training": training,
            "source_checkpoints": {m["source"]: m["sha256"] for m in members}}


def run_calibration(run: Path, choice: str) -> tuple[Calibration | None, dict[str, Any] | None]:
    """(Calibration, calibration.json record) for --calibration auto | none | PATH."""
    from train.calibrate import load_calibration

    if choice == "none":
        return None, None
    path = run / "calibration.json" if choice == "auto" else Path(choice)
    if choice == "auto" and not path.is_file():
        return None, None
    if not path.is_file():
        raise InputError("calibration file not found", path,
                         fix="pass RUN/calibration.json (written by 'python -m train fit'), "
                         "auto, or none")
    cal = load_calibration(path)
    return cal, json.loads(path.read_text())

"""Checkpoints as safetensors: weights plus JSON metadata (spec, arch, fold, metrics, config).

Layout of a run folder RUN (written by `python -m train fit`):
  RUN/folds.json                      patient-level folds fixed by seed
  RUN/fold{k}/best.safetensors        best-on-validation weights of fold k (k = 0..K-1)
  RUN/fold{k}/last.safetensors        last epoch (for --resume), optimiser state beside it
Metadata keys (all JSON strings): ricenet.spec, arch, fold, metrics, config, code_version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from ricecli import __version__
from ricecli.contract import SPEC_KEY
from ricecli.io.files import write_atomic
from ricecli.spec import Spec
from train.model import build_network


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]
    spec: Spec
    arch: dict
    fold: int
    metrics: dict
    config: dict
    code_version: str

    def network(self) -> torch.nn.Module:
        net = build_network(self.arch, in_channels=len(self.spec.channels))
        net.load_state_dict(self.state)
        return net.eval()


def save_checkpoint(path: Path, net: torch.nn.Module, spec: Spec, arch: dict, fold: int,
                    metrics: dict, config: dict) -> None:
    """Write atomically (temp name, then rename) so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        SPEC_KEY: spec.to_json(),
        "arch": json.dumps(arch),
        "fold": json.dumps(fold),
        "metrics": json.dumps(metrics),
        "config": json.dumps(config),
        "code_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with write_atomic(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def load_checkpoint(path: Path) -> Checkpoint:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if SPEC_KEY not in meta:
        raise ValueError(f"{path} is not a ricenet checkpoint (no {SPEC_KEY} metadata)")
    return Checkpoint(
        state=load_file(str(path)),
        spec=Spec.from_json(meta[SPEC_KEY]),
        arch=json.loads(meta["arch"]),
        fold=json.loads(meta["fold"]),
        metrics=json.loads(meta["metrics"]),
        config=json.loads(meta["config"]),
        code_version=meta.get("code_version", "unknown"),
    )

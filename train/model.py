"""The network: MONAI ResNet-18 (3D, early fusion of the channels), per preset, and the
fold ensemble that export turns into one ONNX graph."""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet

# Architecture per preset. `paper` is MONAI's resnet18 with its defaults; `edge` keeps the
# ResNet-18 layout with 8x narrower blocks and a strided stem: a 5-member ensemble is ~10 MB,
# forwards in ~0.1 s on 2 CPU cores and trains on a CPU in minutes.
ARCHS: dict[str, dict] = {
    "paper": {"block_inplanes": [64, 128, 256, 512], "conv1_t_stride": 1, "widen_factor": 1.0},
    "edge": {"block_inplanes": [8, 16, 32, 64], "conv1_t_stride": 2, "widen_factor": 1.0},
    # For tests only: a very small network that still has the ResNet-18 shape.
    "tiny": {"block_inplanes": [4, 8, 8, 16], "conv1_t_stride": 2, "widen_factor": 1.0},
}


def arch_config(preset: str) -> dict:
    """The JSON-serialisable architecture description stored in every checkpoint."""
    if preset not in ARCHS:
        raise ValueError(f"unknown architecture preset {preset!r}; choose from {sorted(ARCHS)}")
    return {"name": "resnet18", "preset": preset, **ARCHS[preset]}


def build_network(arch: dict, in_channels: int, num_classes: int = 2) -> torch.nn.Module:
    """A MONAI 3D ResNet-18 taking `in_channels` fused channels; outputs logits [N, classes]."""
    return ResNet(
        block="basic",
        layers=(2, 2, 2, 2),
        block_inplanes=list(arch["block_inplanes"]),
        spatial_dims=3,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=int(arch["conv1_t_stride"]),
        widen_factor=float(arch.get("widen_factor", 1.0)),
        num_classes=num_classes,
    )


class Ensemble(torch.nn.Module):
    """Fold members -> (mean probabilities [N, 2], per-member probabilities [N, M, 2])."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        member_probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members], dim=1)
        return member_probs.mean(dim=1), member_probs

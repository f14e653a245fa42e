"""Test helpers: tiny real ricenet ONNX models (a MONAI ResNet-18 fold ensemble exported with
torch.onnx plus the ricenet metadata), small synthetic cases, and the CLI run in-process."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ricecli.contract import CARD_KEY, SPEC_KEY
from ricecli.spec import ModelSpace, Spec

# 6 mm, 24x28x24 voxels: 144x168x144 mm covers the template brain and prepares fast.
TINY_SPEC = Spec(model_space=ModelSpace(spacing_mm=(6.0, 6.0, 6.0), size_xyz=(24, 28, 24)),
                 preset="tiny")


def tiny_ensemble(spec: Spec = TINY_SPEC, members: int = 2, seed: int = 0, arch: str = "tiny"):
    """A random-weight fold ensemble (torch) in eval mode."""
    import torch

    from train.model import Ensemble, arch_config, build_network

    torch.manual_seed(seed)
    nets = [build_network(arch_config(arch), len(spec.channels)) for _ in range(members)]
    return Ensemble(nets).eval()


def export_onnx(ensemble, path: Path, spec: Spec, card: dict | None = None,
                metadata: bool = True) -> Path:
    """Export with dynamic batch (legacy exporter: fast), then write ricenet metadata_props."""
    import onnx
    import torch

    x = torch.zeros(1, len(spec.channels), *spec.model_space.shape_zyx)
    outs = ["probabilities", "member_probabilities"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter is deprecated but 7x faster
        torch.onnx.export(ensemble, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["volumes"], output_names=outs,
                          dynamic_axes={n: {0: "N"} for n in ["volumes", *outs]})
    if metadata:
        proto = onnx.load(str(path))
        card = card if card is not None else {
            "name": "ricenet-test", "version": "0.0.1", "members": len(ensemble.members),
            "intended_use": "tests only"}
        for key, value in ((SPEC_KEY, spec.to_json()), (CARD_KEY, json.dumps(card))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    return Path(path)


def export_tiny_model(path: Path, spec: Spec = TINY_SPEC, members: int = 2, seed: int = 0,
                      metadata: bool = True) -> Path:
    """A tiny ricenet ONNX model file at `path`."""
    return export_onnx(tiny_ensemble(spec, members, seed), path, spec, metadata=metadata)


# --- small synthetic cases: the template brain, moved rigidly, with a lesion and a dose --------

def _moved_template(rotation_deg: float, shift_mm: tuple[float, float, float],
                    spacing_mm: float, seed: int):
    """The template T1 seen by a 'scanner': rigidly moved, resampled at spacing_mm, noisy."""
    import numpy as np
    import SimpleITK as sitk

    from ricecli.geometry.template import load_template

    t1 = load_template().t1
    size = [int(n * s / spacing_mm) + 12 for n, s in zip(t1.GetSize(), t1.GetSpacing(),
                                                           strict=True)]
    centre = t1.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1.GetSize()])
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetOrigin([c - spacing_mm * (n - 1) / 2 for c, n in zip(centre, size, strict=True)])
    move = sitk.Euler3DTransform(centre, 0.0, 0.0, np.deg2rad(rotation_deg), shift_mm)
    img = sitk.Resample(t1, grid, move, sitk.sitkLinear, 0.0) * 600.0
    rng = np.random.default_rng(seed)
    arr = sitk.GetArrayFromImage(img)
    arr += rng.normal(0, 5, arr.shape).astype(np.float32) * (arr > 0)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out, move


def _ball(reference, centre_template_mm, move, radius_mm: float, peak: float):
    """A smooth ball at a template-space point, drawn on the grid of `reference`."""
    import numpy as np
    import SimpleITK as sitk

    centre = np.asarray(move.GetInverse().TransformPoint(centre_template_mm))
    zyx = np.indices(reference.GetSize()[::-1]).reshape(3, -1)[::-1].T.astype(float)
    world = (zyx * reference.GetSpacing()) @ np.reshape(reference.GetDirection(), (3, 3)).T \
        + reference.GetOrigin()
    d2 = ((world - centre) ** 2).sum(axis=1).reshape(reference.GetSize()[::-1])
    ball = sitk.GetImageFromArray((peak * np.exp(-d2 / (2 * radius_mm**2))).astype(np.float32))
    ball.CopyInformation(reference)
    return ball


def write_case(folder: Path, ext: str = ".nii.gz", orient: str | None = None,
               lesion_mm: tuple[float, float, float] = (-25.0, 10.0, 15.0)) -> dict[str, Path]:
    """post_op, event and dose files of one synthetic case (dose in the post-op frame, Gy)."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    post_op, move_post = _moved_template(4.0, (6.0, -4.0, 3.0), 2.5, seed=1)
    event, move_event = _moved_template(-3.0, (-5.0, 2.0, -6.0), 2.5, seed=2)
    event = event + _ball(event, lesion_mm, move_event, 6.0, 900.0) * sitk.Cast(event > 0,
                                                                                 sitk.sitkFloat32)
    dose_grid = sitk.BinShrink(post_op, [2, 2, 2])
    dose = _ball(dose_grid, lesion_mm, move_post, 25.0, 60.0)
    images = {"post_op": post_op, "event": event, "dose": dose}
    paths = {}
    for name, img in images.items():
        if orient is not None:
            img = sitk.DICOMOrient(img, orient)
        paths[name] = folder / f"{name}{ext}"
        sitk.WriteImage(img, str(paths[name]), True)
    return paths


# --- the real CLI entry point, in-process -----------------------------------------------------

def run_cli(args: list[str], capsys=None) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process; (exit code, stdout, stderr captured by capsys)."""
    from ricecli import cli

    old = sys.argv
    sys.argv = ["ricecli", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    finally:
        sys.argv = old
    if capsys is None:
        return code, "", ""
    out = capsys.readouterr()
    return code, out.out, out.err

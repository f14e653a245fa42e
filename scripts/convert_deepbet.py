"""Convert deepbet 1.0.2's two brain-extraction networks to ONNX, once, and check parity.

deepbet (Fisch et al. 2024, MIT licence) ships its trained networks inside its wheel as
TorchScript archives: data/models/bbox_model.pt (a coarse brain mask at 128^3, used for the
crop) and data/models/model.pt (the brain mask inside the crop). This script:

1. checks both files' SHA-256 against the pinned wheel (deepbet 1.0.2's RECORD),
2. loads them with torch.jit.load and exports them to ONNX (opset 17, dynamic spatial axes),
3. checks the ONNX graphs against the TorchScript networks on a random input, and the whole
   ricecli.geometry.brain pipeline against deepbet's own BrainExtraction on real scans (Dice, voxels
   that differ), and writes the ONNX files and NOTICE into ricecli/data/brain/.

Why torch.jit.load and not torch.load(weights_only=True): the files are TorchScript archives
(graph + weights), not state dicts, and deepbet's network class (fastmri.models.linknet3d) is
not published. torch.jit.load does not run Python pickles of arbitrary classes: it rebuilds
tensors and TorchScript modules, whose code is compiled TorchScript, not Python. The archives
are also pinned by hash (below) to the files in the deepbet 1.0.2 wheel that pip verified.

Script-time requirements (not ricecli dependencies), without replacing the installed torch:
    pip install --no-deps deepbet==1.0.2
    pip install connected-components-3d fill_voids   # deepbet's own post-processing
Run from the repository root:  python3 scripts/convert_deepbet.py [--scans FILE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "ricecli" / "data" / "brain"
SHARED_MRI = ROOT.parent / "shared" / "data" / "mri"
DEEPBET_VERSION = "1.0.2"
# sha256 of the archives in deepbet-1.0.2-py3-none-any.whl (its RECORD, hex)
PINNED = {
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
}
ONNX_NAMES = {"bbox_model.pt": "deepbet_bbox.onnx", "model.pt": "deepbet_brain.onnx"}
TRACE_SIZE = {"bbox_model.pt": 128, "model.pt": 96}  # export trace only; axes are dynamic
OPSET = 17

NOTICE = """\
Brain-extraction networks (deepbet_bbox.onnx, deepbet_brain.onnx): the trained networks of
deepbet {version} (https://github.com/wwu-mmll/deepbet; PyPI deepbet=={version}, files
data/models/bbox_model.pt and data/models/model.pt of its wheel), converted unchanged to ONNX
(fp32, opset {opset}) by scripts/convert_deepbet.py.

Reference: L. Fisch et al., deepbet: Fast brain extraction of T1-weighted MRI using
Convolutional Neural Networks, Computers in Biology and Medicine 179, 108845, 2024.

{licence}"""


def deepbet_data_dir() -> Path:
    """Where the installed deepbet wheel put its networks."""
    from deepbet.utils import DATA_PATH

    return Path(DATA_PATH) / "models"


def check_pinned(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PINNED[path.name]:
        sys.exit(f"{path}: sha256 {digest} is not deepbet {DEEPBET_VERSION}'s; "
                 f"install exactly deepbet=={DEEPBET_VERSION}")


def deepbet_licence() -> str:
    from importlib.metadata import distribution

    dist = distribution("deepbet")
    if dist.version != DEEPBET_VERSION:
        sys.exit(f"deepbet {dist.version} installed; this script converts {DEEPBET_VERSION}")
    for f in dist.files or []:
        if f.name == "LICENSE":
            return Path(dist.locate_file(f)).read_text().strip() + "\n"
    sys.exit("deepbet's LICENSE is missing from its installed metadata")


def export(pt: Path, out: Path) -> None:
    """TorchScript -> ONNX, then compare the two on a random input."""
    import onnxruntime as ort
    import torch

    net = torch.jit.load(str(pt), map_location="cpu").eval()
    n = TRACE_SIZE[pt.name]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, n, n, n)).astype("f4"))
    axes = {2: "x", 3: "y", 4: "z"}
    torch.onnx.export(net, (x,), str(out), input_names=["image"], output_names=["probs"],
                      dynamic_axes={"image": axes, "probs": axes}, opset_version=OPSET,
                      dynamo=False)
    with torch.no_grad():
        want = net(x).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()})[0]
    print(f"{out.name}: {out.stat().st_size / 1e6:.1f} MB, max |onnx - torch| on a random "
          f"{n}^3 input = {np.abs(got - want).max():.2e}")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def parity(scans: list[Path], reference: Path | None) -> None:
    """ricecli.geometry.brain (ONNX Runtime) vs deepbet's BrainExtraction (torch) on real scans:
    on deepbet's own fine grid (256^3, the same pipeline) and on the grid ricecli ships."""
    import SimpleITK as sitk
    import torch
    from deepbet import BrainExtraction

    from ricecli.geometry import brain

    torch.set_num_threads(2)
    bet = BrainExtraction(no_gpu=True)
    ref = None if reference is None else sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
    for scan in scans:
        t = time.perf_counter()
        _, mask_nii, _ = bet.run(str(scan))
        t_torch = time.perf_counter() - t
        # deepbet's mask is on the file's voxel grid (nibabel i,j,k); sitk's array is k,j,i
        want = np.asarray(mask_nii.dataobj).astype(np.uint8).transpose(2, 1, 0)
        image = sitk.ReadImage(str(scan))
        line = [f"{scan.name}: deepbet (torch) {t_torch:.1f} s"]
        for grid in sorted({256, brain.GRID}, reverse=True):
            t = time.perf_counter()
            got = sitk.GetArrayFromImage(brain.brain_mask_on_grid(image, grid))
            took = time.perf_counter() - t
            line.append(f"ricecli grid {grid}: {took:.1f} s, Dice vs deepbet {dice(got, want):.4f}"
                        f" ({int((got != want).sum())} of {got.size} voxels differ)")
            if ref is not None and ref.shape == got.shape:
                line[-1] += f", Dice vs reference mask {dice(got, ref):.4f}"
        if ref is not None and ref.shape == want.shape:
            line[0] += f" (Dice vs reference mask {dice(want, ref):.4f})"
        print("\n  ".join(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", nargs="*", type=Path, default=None,
                        help="scans for the parity check (default: ../shared/data/mri/**)")
    parser.add_argument("--reference", type=Path, default=SHARED_MRI / "TCGA-FG-6692" /
                        "TCGA-FG-6692_t1c_brainmask.nii.gz",
                        help="a brain mask to report Dice against, for scans on its grid")
    parser.add_argument("--skip-export", action="store_true",
                        help="only run the parity check on the ONNX files already in place")
    args = parser.parse_args()
    if not args.skip_export:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for name, onnx_name in ONNX_NAMES.items():
            pt = deepbet_data_dir() / name
            check_pinned(pt)
            export(pt, OUT_DIR / onnx_name)
        (OUT_DIR / "NOTICE").write_text(NOTICE.format(version=DEEPBET_VERSION, opset=OPSET,
                                                      licence=deepbet_licence()))
    scans = args.scans
    if scans is None:
        scans = sorted(p for p in SHARED_MRI.glob("*/*.nii.gz") if "mask" not in p.name)
    if scans:
        parity(scans, args.reference if args.reference.is_file() else None)


if __name__ == "__main__":
    main()

"""Fold checkpoints -> ONE verified ONNX model carrying the spec and model card.

    python export/to_onnx.py --run RUN --out model.onnx [--folds all|0,1] [--fp16] [--name N]
                             [--check-case DIR|FILE.npz]

The graph follows ricecli/contract.py (input `volumes` [N, C, D, H, W] float32 with
a dynamic N; outputs `probabilities` [N, 2] and `member_probabilities` [N, M, 2]; spec and
card in metadata_props); opset 18; one self-contained file; sibling convs merged (exact:
export/merge_convs.py, once here rather than at every session open). The card holds name,
version, classes, members with their fold metrics and checkpoint sha256, training summary,
intended use, created, exporter versions and fp16. With --fp16 the weights and compute are float16
inside, behind Cast nodes, so the float32 interface stays. Only the torch export is here: every
export is checked (onnx full check, then ricecli's own load_model and OnnxRuntimeEngine vs the
float32 PyTorch ensemble) before it is renamed into place; fp32 must agree to <= 1e-4.

--calibration auto (default) puts RUN/calibration.json (written by `python -m train fit`:
temperature and conformal threshold fitted on out-of-fold predictions) into the spec's
`calibration` field and its out-of-fold figures into the card; a path uses that file; none
exports an uncalibrated model. The graph itself is unchanged: ricecli applies the calibration.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python export/to_onnx.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.merge_convs import merge_sibling_convs  # noqa: E402
from export.run_folds import (  # noqa: E402
    fold_checkpoints,
    load_fold_members,
    run_calibration,
    run_card,
)
from ricecli import __version__ as RICECLI_VERSION  # noqa: E402
from ricecli.cli import report_error  # noqa: E402
from ricecli.contract import INPUT_NAME, OUTPUT_NAMES, metadata  # noqa: E402
from ricecli.errors import InputError, ModelError  # noqa: E402
from ricecli.inference.engine import OnnxRuntimeEngine  # noqa: E402
from ricecli.inference.model import file_sha256, load_model  # noqa: E402
from ricecli.io.files import write_atomic  # noqa: E402
from ricecli.runtime import CPU_EP  # noqa: E402
from ricecli.spec import Spec  # noqa: E402

OPSET = 18
PARITY_TOL = 1e-4
INTENDED_USE = "research; trained on simulated data unless stated; not for clinical use"


@dataclass
class ExportReport:
    """What an export produced and how well ONNX Runtime matched PyTorch."""

    path: str
    size_bytes: int
    sha256: str
    members: int
    fp16: bool
    opset: int
    exporter: str
    parity: dict[str, float] = field(default_factory=dict)  # input name -> max |ORT - torch|
    seconds: float = 0.0

    def lines(self) -> list[str]:
        kind = "fp16 (vs fp32 torch)" if self.fp16 else "fp32"
        out = [f"wrote {self.path}: {self.size_bytes / 1e6:.2f} MB, {self.members} member(s), "
               f"opset {self.opset}, {self.exporter} exporter, {self.seconds:.1f} s"]
        out += [f"parity {kind} on {name}: max |ORT - torch| = {d:.2e}"
                for name, d in self.parity.items()]
        return out


def pick_exporter(exporter: str = "auto") -> str:
    """torch.export-based ('dynamo', needs onnxscript) when available, else 'torchscript'."""
    if exporter == "auto":
        return "dynamo" if importlib.util.find_spec("onnxscript") else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise InputError(f"unknown exporter {exporter!r}", fix="use auto, dynamo or torchscript")
    return exporter


def _graph_module(members: list[Any], fp16: bool) -> Any:
    """Ensemble wrapped so the ONNX interface is float32 even when the inside is float16."""
    import torch

    from train.model import Ensemble

    class OnnxEnsemble(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            nets = [copy.deepcopy(m).cpu().eval() for m in members]
            self.ensemble = Ensemble([n.half() if fp16 else n.float() for n in nets]).eval()

        def forward(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, member = self.ensemble(volumes.half() if fp16 else volumes)
            return mean.float(), member.float()

    return OnnxEnsemble().eval()


def _torch_export(module: Any, example: Any, path: Path, exporter: str) -> None:
    """Write the graph with a dynamic batch axis, all weights inside the one file."""
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. 'torchvision not installed'
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_shapes=({0: batch},),
                              opset_version=OPSET, external_data=False, dynamo=True,
                              verbose=False)
        else:
            axes = {n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)}
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)


def complete_card(card: dict[str, Any], spec: Spec, fp16: bool, exporter: str,
                  members: int) -> dict[str, Any]:
    """Fill what every card must say (classes, intended use, versions, time) if missing."""
    import onnx
    import onnxruntime
    import torch

    out: dict[str, Any] = {
        "name": f"ricenet-{spec.preset}", "version": "0.1.0", "classes": list(spec.classes),
        "members": [{"index": i} for i in range(members)], "intended_use": INTENDED_USE}
    out.update(card)
    out["fp16"] = fp16
    out.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out["exporter"] = {"tool": "export/to_onnx.py", "exporter": exporter, "opset": OPSET,
                       "ricecli": RICECLI_VERSION, "torch": torch.__version__,
                       "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    return out


def _ort_run(path: Path, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model as ricecli runs it on the CPU: load_model (checks the I/O contract and the
    metadata) and OnnxRuntimeEngine."""
    return OnnxRuntimeEngine(load_model(path), [CPU_EP]).run(volumes.astype(np.float32))


def _torch_run(members: list, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    module = _graph_module(members, fp16=False)
    with torch.no_grad():
        mean, member = module(torch.from_numpy(volumes.astype(np.float32)))
    return mean.numpy(), member.numpy()


def parity(path: Path, members: list, volumes: np.ndarray) -> float:
    """Max |ONNX Runtime - float32 PyTorch| over both outputs; inf if ORT gives non-finite."""
    got = _ort_run(path, volumes)
    want = _torch_run(members, volumes)
    if not all(np.isfinite(g).all() for g in got):
        return float("inf")
    return float(max(np.abs(g - w).max() for g, w in zip(got, want, strict=True)))


def random_volumes(spec: Spec, batch: int, seed: int = 0) -> np.ndarray:
    """Standard-normal input [batch, C, D, H, W] (roughly what z-scored T1 channels look like)."""
    shape = (batch, len(spec.channels), *spec.model_space.shape_zyx)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def export_ensemble(members: list, spec: Spec, card: dict, out_path: str | Path,
                    fp16: bool = False, check_inputs: dict[str, np.ndarray] | None = None,
                    parity_batch: int = 2, tol: float = PARITY_TOL,
                    exporter: str = "auto") -> ExportReport:
    """Export fold networks as one ONNX ensemble, verify it, then rename it into place."""
    import onnx
    import torch

    start = time.perf_counter()
    if not members:
        raise ModelError("no ensemble members to export")
    exporter = pick_exporter(exporter)
    out_path = Path(out_path)
    card = complete_card(card, spec, fp16, exporter, len(members))
    inputs = {"random": random_volumes(spec, parity_batch)}
    inputs.update(check_inputs or {})
    with write_atomic(out_path) as tmp:  # renamed into place only once verified
        example = torch.from_numpy(random_volumes(spec, 2, seed=1))
        _torch_export(_graph_module(members, fp16), example, tmp, exporter)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in metadata(spec, card).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"ricenet {card['name']} {card['version']}: {INTENDED_USE}"
        merge_sibling_convs(proto)
        onnx.save(proto, str(tmp))
        del proto
        onnx.checker.check_model(str(tmp), full_check=True)
        diffs = {name: parity(tmp, members, vol) for name, vol in inputs.items()}
        worst = max(diffs.values())
        if not np.isfinite(worst) or (not fp16 and worst > tol):
            raise ModelError(f"ONNX Runtime disagrees with PyTorch by {worst:.2e} (> {tol:g}) "
                             f"on {max(diffs, key=lambda k: diffs[k])}", out_path,
                             fix="report this with the torch/onnxruntime versions; try "
                             "--exporter torchscript")
    return ExportReport(path=str(out_path), size_bytes=out_path.stat().st_size,
                        sha256=file_sha256(out_path), members=len(members), fp16=fp16,
                        opset=OPSET, exporter=exporter, parity=diffs,
                        seconds=time.perf_counter() - start)


def read_check_case(path: Path, spec: Spec) -> np.ndarray:
    """A prepared case as [1, C, D, H, W]: a `ricecli prepare` folder or an .npz."""
    want = tuple(spec.model_space.shape_zyx)
    if path.suffix == ".npz":
        with np.load(path) as data:
            if "volumes" in data:
                arr = data["volumes"]
            else:
                missing = [c for c in spec.channels if c not in data]
                if missing:
                    raise InputError(f"npz has neither 'volumes' nor channels {missing}", path,
                                     fix="save volumes [C,D,H,W] or one array per channel")
                arr = np.stack([data[c] for c in spec.channels])
    elif path.is_dir():
        import SimpleITK as sitk

        arrays = []
        for channel in spec.channels:
            hits = [path / f"{channel}{ext}" for ext in (".nii.gz", ".nii", ".nrrd", ".mha")]
            hit = next((h for h in hits if h.is_file()), None)
            if hit is None:
                raise InputError(f"prepared case has no {channel}.nii.gz", path,
                                 fix="pass a folder written by 'ricecli prepare'")
            arrays.append(sitk.GetArrayFromImage(sitk.ReadImage(str(hit))))
        arr = np.stack(arrays)
    else:
        raise InputError("check case not found", path,
                         fix="pass a 'ricecli prepare' output folder or an .npz")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[1:] != (len(spec.channels), *want):
        raise InputError(f"check case has shape {arr.shape}, the spec needs "
                         f"[N,{len(spec.channels)},{','.join(map(str, want))}]", path,
                         fix="prepare it with the same spec (preset) as the model")
    return arr


def main(argv: list[str] | None = None) -> int:
    """CLI: export a run's folds, print the file size and the parity figures."""
    import argparse

    ap = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="run folder (RUN/fold{k}/...)")
    ap.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    ap.add_argument("--folds", default="all", help="'all' or a list like 0,1,2")
    ap.add_argument("--fp16", action="store_true", help="float16 weights/compute inside")
    ap.add_argument("--name", default=None, help="model name in the card (default: run name)")
    ap.add_argument("--model-version", default="0.1.0", help="model version in the card")
    ap.add_argument("--check-case", type=Path, default=None,
                    help="a 'ricecli prepare' folder or .npz to check parity on as well")
    ap.add_argument("--parity-batch", type=int, default=2, help="batch of the random check")
    ap.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    ap.add_argument("--calibration", default="auto",
                    help="auto (RUN/calibration.json if there), none, or a calibration.json")
    ap.add_argument("--card-extra", type=Path, action="append", default=[],
                    help="JSON file whose keys are added to the model card (e.g. held-out "
                         "evaluation, ablation table); repeatable")
    args = ap.parse_args(argv)
    try:
        paths = fold_checkpoints(args.run, args.folds)
        members, spec, checkpoints = load_fold_members(paths)
        card = run_card(args.run, paths, checkpoints, args.name)
        card["version"] = args.model_version
        calibration, cal_record = run_calibration(args.run, args.calibration)
        if calibration is not None:
            spec = replace(spec, calibration=calibration)
            card["calibration"] = {**(cal_record or {}), "applied_by": "ricecli (temperature on "
                                   "each member's log-probabilities, then the mean)"}
        for extra in args.card_extra:
            try:
                card.update(json.loads(extra.read_text()))
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read it as JSON ({err})", extra,
                                 fix="pass a JSON object file to --card-extra") from None
        checks = {}
        if args.check_case is not None:
            checks[f"case {args.check_case.name}"] = read_check_case(args.check_case, spec)
        report = export_ensemble(members, spec, card, args.out, fp16=args.fp16,
                                 check_inputs=checks, parity_batch=args.parity_batch,
                                 exporter=args.exporter)
    except Exception as err:  # noqa: BLE001 - one line, no traceback
        return report_error(err)
    print("\n".join(report.lines()))
    print(f"calibration: temperature {calibration.temperature:.3f}, conformal qhat "
          f"{calibration.conformal_qhat} ({calibration.n_cases} out-of-fold cases)"
          if calibration is not None else "calibration: none (uncalibrated probabilities)")
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency of `ricecli classify` and `ricecli explain` on a real-size case, stage by stage, and
torch eager vs ONNX Runtime on the same network, as ratios measured in one run.

    python benchmarks/latency.py [--model M] [--threads T] [--repeats 5] [--members 5]
                                 [--skip-cli] [--skip-engines] [--skip-explain]
                                 [--paper-size 96] [--workdir DIR]

The case: post-op and event T1c of 256x256x180 at 1 mm (the shipped MNI template, moved
rigidly as a scanner would see it, with noise and an enhancing lesion) and a 2.5 mm dose grid,
written as NIfTI. Model: --model, else the shipped default, else a random-weight `edge`
ensemble exported with export/to_onnx.py (weights do not change the speed). The torch vs ORT
comparison always uses a random-weight `edge` ensemble with the same member count, exported
the same way (sibling convs merged at export, export/merge_convs.py); torch and ONNX Runtime
take turns inside every repeat (side by side on a shared machine), and ONNX Runtime runs that
export and the shipped model (the same architecture and member count: the speed a user gets).
--paper-size N adds the `paper` architecture (1 member, random weights) at 1x3xN^3. Prints one
line per figure and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scanner_view(size_xyz, spacing_mm, rotation_deg, shift_mm, seed):
    """The template T1 moved rigidly onto a scanner grid (identity direction), with noise."""
    import SimpleITK as sitk

    from ricecli.geometry.template import load_template

    t1 = load_template().t1
    centre = t1.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1.GetSize()])
    grid = sitk.Image([int(n) for n in size_xyz], sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetOrigin([c - spacing_mm * (n - 1) / 2 for c, n in zip(centre, size_xyz, strict=True)])
    move = sitk.Euler3DTransform(centre, np.deg2rad(2.0), 0.0, np.deg2rad(rotation_deg),
                                 shift_mm)
    img = sitk.Resample(t1, grid, move, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img) * 600.0
    arr += np.random.default_rng(seed).normal(0, 6, arr.shape).astype(np.float32) * (arr > 0)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out, move


def ball(reference, centre_mm, radius_mm, peak):
    """A Gaussian ball at a world point on `reference`'s grid (identity direction)."""
    import SimpleITK as sitk

    idx = np.asarray(reference.TransformPhysicalPointToContinuousIndex(centre_mm))
    sp = np.asarray(reference.GetSpacing())
    z, y, x = np.ogrid[tuple(slice(0, n) for n in reference.GetSize()[::-1])]
    d2 = ((x - idx[0]) * sp[0]) ** 2 + ((y - idx[1]) * sp[1]) ** 2 + ((z - idx[2]) * sp[2]) ** 2
    out = sitk.GetImageFromArray((peak * np.exp(-d2 / (2 * radius_mm**2))).astype(np.float32))
    out.CopyInformation(reference)
    return out


def write_case(folder: Path) -> dict[str, Path]:
    """Real-size post-op / event (256x256x180, 1 mm) and dose (2.5 mm) NIfTI files."""
    import SimpleITK as sitk

    lesion_template = (-25.0, 10.0, 15.0)
    post, move_post = scanner_view((256, 256, 180), 1.0, 4.0, (6.0, -4.0, 3.0), 1)
    event, move_event = scanner_view((256, 256, 180), 1.0, -3.0, (-5.0, 2.0, -6.0), 2)
    in_event = move_event.GetInverse().TransformPoint(lesion_template)
    event = event + ball(event, in_event, 6.0, 900.0) * sitk.Cast(event > 0, sitk.sitkFloat32)
    dose_grid = sitk.Image([103, 103, 72], sitk.sitkFloat32)
    dose_grid.SetSpacing([2.5] * 3)
    dose_grid.SetOrigin(post.GetOrigin())
    dose = ball(dose_grid, move_post.GetInverse().TransformPoint(lesion_template), 25.0, 60.0)
    paths = {}
    for name, img in (("post_op", post), ("event", event), ("dose", dose)):
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(img, str(paths[name]), True)
    return paths


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def random_edge_model(folder: Path, members: int, spec=None) -> tuple[Path, list]:
    """A random-weight `edge` ensemble exported with export/to_onnx.py; (path, torch members)."""
    import torch

    from export.to_onnx import export_ensemble
    from ricecli.spec import PRESETS
    from train.model import arch_config, build_network

    spec = spec or PRESETS["edge"]
    torch.manual_seed(0)
    nets = [build_network(arch_config("edge"), len(spec.channels)).eval() for _ in range(members)]
    card = {"name": "ricenet-edge-random", "version": "bench", "members": members,
            "intended_use": "benchmark only: random weights"}
    path = folder / "edge-random.onnx"
    export_ensemble(nets, spec, card, path)
    return path, nets


def side_by_side(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, taking turns inside every repeat (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(0.3)  # the last runtime's idle threads stop spinning before the next
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def compare_engines(path: Path, nets: list, threads: int, repeats: int,
                    batches: tuple[int, ...], shipped: Path | None = None) -> dict:
    """torch eager vs ONNX Runtime (as ricecli opens it) on the same export, per batch; and
    ORT on the `shipped` model when it has the same input and member count."""
    import onnx
    import torch

    from ricecli.inference.engine import OnnxRuntimeEngine
    from ricecli.inference.model import load_model
    from train.model import Ensemble

    model = load_model(path)
    engines = {"ort": OnnxRuntimeEngine(model, threads=threads)}
    if shipped is not None:
        other = load_model(shipped)
        if other.spec.model_space == model.spec.model_space and other.members == len(nets):
            engines["ort_shipped"] = OnnxRuntimeEngine(other, threads=threads)
    ensemble = Ensemble(nets).eval()
    torch.set_num_threads(threads)
    shape = (len(model.spec.channels), *model.spec.model_space.shape_zyx)
    stems = [n.op_type for n in onnx.load(str(path)).graph.node if "volumes" in n.input]
    out = {"members": len(nets), "input_shape": list(shape), "threads": threads,
           "stem_convs_in_export": len(stems), "torch": torch.__version__}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
        xt = torch.from_numpy(x)

        def run_torch(xt=xt):
            with torch.inference_mode():
                return ensemble(xt)

        fns = {"torch": run_torch, **{name: (lambda x=x, e=e: e.run(x))
                                      for name, e in engines.items()}}
        times = side_by_side(fns, repeats)
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = run_torch()
        got = engines["ort"].run(x)
        diff = float(max(np.abs(ref[0].numpy() - got[0]).max(),
                         np.abs(ref[1].numpy() - got[1]).max()))
        row: dict = {"torch_eager_s": round(med["torch"], 4)}
        for name in engines:
            ratios = [a / b for a, b in zip(times["torch"], times[name], strict=True)]
            suffix = name.removeprefix("ort")
            row[f"onnxruntime{suffix}_s"] = round(med[name], 4)
            row[f"torch_over_ort{suffix}"] = round(med["torch"] / med[name], 2)
            row[f"torch_over_ort{suffix}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        row.update(times_s={k: [round(t, 4) for t in v] for k, v in times.items()},
                   max_abs_diff=diff)
        out[f"batch{batch}"] = row
        said = ", ".join(f"{name} {med[name]:.3f} s ({med['torch'] / med[name]:.2f}x)"
                         for name in engines)
        print(f"batch {batch}: torch eager {med['torch']:.3f} s, {said}; max |diff| {diff:.1e}",
              flush=True)
    return out


def torch_vs_ort(folder: Path, members: int, threads: int, repeats: int, spec=None,
                 shipped: Path | None = None) -> dict:
    """Same random edge ensemble: torch eager vs ONNX Runtime CPU, batch 1 and batch 8."""
    path, nets = random_edge_model(folder, members, spec)
    return compare_engines(path, nets, threads, repeats, (1, 8), shipped)


def paper_vs_torch(folder: Path, size: int, threads: int, repeats: int) -> dict:
    """The `paper` architecture (1 member, random weights) at 1x3xsize^3: torch vs ORT."""
    import torch

    from export.to_onnx import export_ensemble
    from ricecli.spec import ModelSpace, Spec
    from train.model import arch_config, build_network

    spec = Spec(preset="paper", model_space=ModelSpace(spacing_mm=(2.0, 2.0, 2.0),
                                                       size_xyz=(size, size, size)))
    torch.manual_seed(0)
    net = build_network(arch_config("paper"), len(spec.channels)).eval()
    path = folder / f"paper-{size}.onnx"
    export_ensemble([net], spec, {"name": "ricenet-paper-random", "version": "bench"}, path,
                    parity_batch=1)
    print(f"paper architecture at 1x3x{size}^3:", flush=True)
    return compare_engines(path, [net], threads, repeats, (1,))


def stages(paths: dict, model_path: Path | None, repeats: int) -> dict:
    """read / prepare (with its sub-stages) / infer / pipeline.classify end to end, in-process."""
    from ricecli.inference.engine import describe, open_engine
    from ricecli.inference.model import load_model
    from ricecli.io.dose import read_dose
    from ricecli.io.volume import read_mr
    from ricecli.pipeline import classify, prepare_timings
    from ricecli.prepare import CaseInputs, prepare_case, to_tensor

    model = load_model(model_path)
    engine = open_engine(model, "cpu")
    print(f"model {model.name} {model.version}; engine {describe(engine)}", flush=True)
    out: dict = {"model": model.summary(), "engine": engine.name}
    start = time.perf_counter()
    read_mr(paths["post_op"])
    read_mr(paths["event"])
    read_dose(paths["dose"])
    out["read_s"] = round(time.perf_counter() - start, 3)
    inputs = CaseInputs(post_op=paths["post_op"], event=paths["event"], dose=paths["dose"])
    start = time.perf_counter()
    case = prepare_case(inputs, model.spec)
    out["prepare_s"] = round(time.perf_counter() - start, 3)
    out["prepare_stages_s"] = {k.removeprefix("prepare."): round(v, 3)
                               for k, v in prepare_timings(case).items()}
    tensor = to_tensor(case, model.spec)[None]
    t_infer, _ = timed(lambda: engine.run(tensor), repeats)
    out["infer_s"] = round(t_infer, 4)
    start = time.perf_counter()
    result = classify(inputs, model, engine).record
    out["classify_in_process_s"] = round(time.perf_counter() - start, 3)
    out["classify_timings_s"] = result["timings_s"]
    print(f"read {out['read_s']} s; prepare {out['prepare_s']} s "
          f"{out['prepare_stages_s']}; infer {out['infer_s']} s; classify (in-process, warm) "
          f"{out['classify_in_process_s']} s", flush=True)
    return out


def _timed_cli(command: str, paths: dict, model_path: Path | None, extra: list[str]) -> float:
    """Wall time of one `ricecli COMMAND` on the case as a fresh process (imports and all)."""
    cmd = [sys.executable, "-m", "ricecli.cli", command, "--t1", str(paths["post_op"]),
           "--t1", str(paths["event"]), "--dose", str(paths["dose"]), "--device", "cpu", *extra]
    if model_path is not None:
        cmd += ["--model", str(model_path)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ricecli {command} failed: {proc.stderr.strip()}")
    return wall


def cli_wall(paths: dict, model_path: Path | None, folder: Path) -> float:
    """`ricecli classify` as a fresh process (imports, model load, everything)."""
    wall = _timed_cli("classify", paths, model_path, ["--json", str(folder / "result.json"),
                                                      "--overwrite"])
    print(f"ricecli classify (fresh process, end to end): {wall:.2f} s", flush=True)
    return wall


def explain_wall(paths: dict, model_path: Path | None, folder: Path) -> dict:
    """`ricecli explain` at its defaults as a fresh process; its explain.json timings."""
    out = folder / "explain"
    wall = _timed_cli("explain", paths, model_path, ["--out", str(out), "--overwrite"])
    record = json.loads((out / "explain.json").read_text())
    print(f"ricecli explain (fresh process, defaults, end to end): {wall:.2f} s; "
          f"{record.get('method')}; positions {record.get('positions')}", flush=True)
    return {"wall_s": round(wall, 3), "method": record.get("method"),
            "positions": record.get("positions"), "timings_s": record.get("timings_s"),
            "volumes_per_s": record.get("volumes_per_s")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", type=int, default=None,
                    help="ensemble size of the random model (default: the model's, else 5)")
    ap.add_argument("--skip-cli", action="store_true", help="no fresh-process classify run")
    ap.add_argument("--skip-engines", action="store_true", help="no torch vs ORT comparison")
    ap.add_argument("--skip-explain", action="store_true", help="no fresh-process explain run")
    ap.add_argument("--paper-size", type=int, default=0,
                    help="also torch vs ORT on the paper architecture at 1x3xN^3 (e.g. 96)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    from ricecli import __version__
    from ricecli.inference.model import default_model_path, load_model
    from ricecli.runtime import physical_cores

    threads = args.threads or physical_cores()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ricenet-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    model_path = args.model
    if model_path is None and default_model_path().is_file():
        model_path = default_model_path()
    start = time.perf_counter()
    paths = write_case(work)
    print(f"case written in {time.perf_counter() - start:.1f} s to {work}", flush=True)
    members = args.members
    spec = None
    if model_path is not None:
        loaded = load_model(model_path)
        members = members or loaded.members
        spec = loaded.spec
    members = members or 5
    ratios = None if args.skip_engines else torch_vs_ort(work, members, threads, args.repeats,
                                                         spec, model_path)
    if model_path is None:
        if args.skip_engines:
            random_edge_model(work, members)
        model_path = work / "edge-random.onnx"
        print("no default model shipped: using the random-weight edge export", flush=True)
    report = {"benchmark": "latency", "ricecli": __version__, "threads": threads,
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "logical_cpus": os.cpu_count(), "python": platform.python_version()},
              "case": {"mr_size_xyz": [256, 256, 180], "mr_spacing_mm": 1.0,
                       "dose_spacing_mm": 2.5},
              "torch_vs_onnxruntime": ratios}
    if args.paper_size:
        report["paper_torch_vs_onnxruntime"] = paper_vs_torch(work, args.paper_size, threads,
                                                              args.repeats)
    report["stages"] = stages(paths, model_path, args.repeats)
    if not args.skip_cli:
        report["classify_cli_wall_s"] = round(cli_wall(paths, model_path, work), 3)
    if not args.skip_explain:
        report["explain_cli"] = explain_wall(paths, model_path, work)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

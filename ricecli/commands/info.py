"""`ricecli info`: the model (name, version, hash, classes, grid, calibration, members), this
machine's engines and the ONNX Runtime build, as a readable summary or (--json) raw JSON."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from ricecli.commands import options as opt

Info = dict[str, Any]  # the JSON `info` prints: a JSON boundary


def versions() -> dict[str, str]:
    """Versions of ricecli, Python and the libraries inference depends on."""
    from ricecli import __version__

    out = {"ricecli": __version__, "python": platform.python_version()}
    for dist in ("onnxruntime", "onnxruntime-gpu", "SimpleITK", "numpy", "pydicom", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def gather(model_path: Path | None) -> Info:
    """Everything `info` shows, as plain JSON; a missing default model is noted, not fatal.
    Without ONNX Runtime this is the one-line error naming the extra to install (exit 2)."""
    from ricecli.errors import ModelError
    from ricecli.inference.engine import available_engines
    from ricecli.inference.model import default_model_path, load_model
    from ricecli.runtime import import_onnxruntime, onnxruntime_builds, physical_cores

    ort = import_onnxruntime()
    out: Info = {"versions": versions(),
                 "engines": available_engines(),
                 "onnxruntime_providers": ort.get_available_providers(),
                 "onnxruntime_builds": onnxruntime_builds(),
                 "cpu": {"physical_cores": physical_cores(), "machine": platform.machine()},
                 "default_model": str(default_model_path())}
    try:
        loaded = load_model(model_path)
    except ModelError as err:
        if model_path is not None:
            raise
        out["model"] = None
        out["model_note"] = err.one_line()
        return out
    out["model"] = {**loaded.summary(), "members": loaded.members}
    out["card"] = loaded.card
    out["spec"] = loaded.spec.to_dict()
    return out


def command(
    model: opt.ModelOpt = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the raw JSON instead of the summary.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--out", help="Also write the JSON to this file.")] = None,
) -> None:
    """Show the model (name, version, classes, grid, calibration, members), the engines this
    machine can run and the versions in use."""
    info = gather(model)
    text = json.dumps(info, indent=2, default=str) + "\n"
    if output is not None:
        from ricecli.io.files import write_text_atomic

        write_text_atomic(output, text)
    if as_json:
        typer.echo(text, nl=False)
        return
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print("\n".join(summary_lines(info)))


def summary_lines(info: Info) -> list[str]:
    """The readable summary (rich markup): model, engines, ONNX Runtime and versions."""
    from rich.markup import escape  # names and card texts are not markup

    model = info.get("model")
    lines = ([f"[yellow]no model:[/] {escape(str(info.get('model_note')))}"] if model is None
             else [f"[bold]{escape(model['name'])}[/] " + escape(
                 f"{model['version']}  ({model['format']}, {model['members'] or '?'} members)")]
             + [escape(line) for line in _model_lines(model, info.get("card") or {},
                                                      info["spec"])])
    engines = info["engines"]
    lines.append("engines:      " + ", ".join(f"{name} {'yes' if ok else 'no'}"
                                             for name, ok in engines.items()))
    builds = info.get("onnxruntime_builds") or ["none"]
    version = info["versions"].get("onnxruntime-gpu") or info["versions"].get("onnxruntime", "?")
    lines.append(f"onnxruntime:  {version} ({' + '.join(builds)}); providers "
                 f"{', '.join(info['onnxruntime_providers'])}")
    lines.append(f"cpu:          {info['cpu']['physical_cores']} physical cores "
                 f"({info['cpu']['machine']})")
    lines.append("versions:     " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    return lines


def _model_lines(model: Info, card: Info, spec: Info) -> list[str]:
    space = spec["model_space"]
    size = " x ".join(str(v) for v in space["size_xyz"])
    spacing = " x ".join(f"{v:g}" for v in space["spacing_mm"])
    lines = [f"file:         {model['path']}",
             f"sha256:       {model['sha256']}",
             f"classes:      {', '.join(spec['classes'])}",
             f"channels:     {', '.join(spec['channels'])} (T1 {spec['t1_normalisation']}, "
             f"dose / {spec['dose_scale_gy']:g} Gy)",
             f"grid:         {size} voxels of {spacing} mm in {space['template']} "
             f"(preset {spec.get('preset', '?')})",
             f"calibration:  {_calibration(spec.get('calibration'))}"]
    listed = card.get("members")  # a list of member records, or only their count
    members = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    lines += [f"{'members:' if i == 0 else '':<14}{_member(m, i)}"
              for i, m in enumerate(members)]
    for key, label in (("intended_use", "intended use"), ("created", "created")):
        if key in card:
            lines.append(f"{label + ':':<14}{card[key]}")
    return lines


def _calibration(cal: Info | None) -> str:
    if not cal:
        return "none (probabilities are the ensemble's raw mean)"
    text = f"temperature {cal['temperature']:.2f}"
    if cal.get("conformal_qhat") is not None:
        coverage = 1.0 - float(cal.get("conformal_alpha") or 0.0)
        text += f", conformal qhat {cal['conformal_qhat']:.3f} ({coverage:.0%} coverage)"
    return text + f", fitted on {cal.get('n_cases', '?')} cases ({cal.get('fitted_on', '?')})"


def _member(member: Info, index: int) -> str:
    name = f"fold {member['fold']}" if "fold" in member else f"#{member.get('index', index)}"
    metrics = member.get("metrics") or {}
    shown = [f"{k.removeprefix('val_')} {v:.3f}" for k, v in metrics.items()
             if k in ("val_macro_f1", "val_auc") and isinstance(v, (int, float))]
    return f"{name}: {', '.join(shown)}" if shown else name

"""`ricecli info`: the model card, its spec, this machine's engines and the versions in use."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from ricecli.commands.classify import ModelOpt


def versions() -> dict:
    """Versions of ricecli, Python and the libraries inference depends on."""
    from ricecli import __version__

    out = {"ricecli": __version__, "python": platform.python_version()}
    for dist in ("onnxruntime", "onnxruntime-gpu", "SimpleITK", "numpy", "pydicom", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def gather(model_path: Path | None) -> dict:
    """Everything `info` shows, as plain JSON; a missing default model is noted, not fatal."""
    import onnxruntime as ort

    from ricecli.errors import ModelError
    from ricecli.inference.engine import available_engines, physical_cores
    from ricecli.inference.model import default_model_path, load_model

    out: dict = {"versions": versions(),
                 "engines": available_engines(),
                 "onnxruntime_providers": ort.get_available_providers(),
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
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--out", help="Also write the JSON to this file.")] = None,
) -> None:
    """Show the model card and spec, the available engines and providers, and versions."""
    info = gather(model)
    text = json.dumps(info, indent=2, default=str) + "\n"
    if output is not None:
        from ricecli.outputs.report import write_text_atomic

        write_text_atomic(output, text)
    if as_json:
        typer.echo(text, nl=False)
        return
    _print_tables(info)


def _print_tables(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    model = info.get("model")
    if model is None:
        console.print(f"[yellow]no model:[/] {info.get('model_note')}")
    else:
        card = info.get("card", {})
        console.print(f"[bold]{model['name']}[/] {model['version']}  ({model['format']}, "
                      f"{model['members'] or '?'} members)  {model['path']}")
        console.print(f"sha256 {model['sha256']}")
        for key in ("intended_use", "training", "training_summary", "metrics", "created"):
            if key in card:
                console.print(f"{key}: {json.dumps(card[key], default=str)}")
        spec = info["spec"]
        space = spec["model_space"]
        console.print(f"spec: channels {', '.join(spec['channels'])}; classes "
                      f"{', '.join(spec['classes'])}; model space {space['template']} "
                      f"{space['size_xyz']} voxels at {space['spacing_mm']} mm; dose scale "
                      f"{spec['dose_scale_gy']} Gy; T1 {spec['t1_normalisation']}")
    table = Table(title="engines on this machine", show_edge=False)
    table.add_column("engine")
    table.add_column("available")
    for name, ok in info["engines"].items():
        table.add_row(name, "yes" if ok else "no")
    console.print(table)
    console.print(f"onnxruntime providers: {', '.join(info['onnxruntime_providers'])}; "
                  f"physical cores {info['cpu']['physical_cores']}")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))

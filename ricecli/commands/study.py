"""`ricecli study`: one patient's studies (DICOM) in, SR + parametric map + result.json out;
with no IN_DIR, the mercure module contract (MERCURE_IN_DIR, MERCURE_OUT_DIR, task.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ricecli.commands import options as opt
from ricecli.errors import InputError, RicenetError

if TYPE_CHECKING:  # ricecli.study imports the DICOM stack: only `ricecli study` needs it
    from ricecli.study import StudySettings

MERCURE_IN, MERCURE_OUT, TASK_FILE = "MERCURE_IN_DIR", "MERCURE_OUT_DIR", "task.json"
# task.json process settings -> (StudySettings field, type)
TASK_SETTINGS: dict[str, tuple[str, type]] = {
    "model": ("model", str), "device": ("device", str), "explain": ("explain", bool),
    "event_study": ("event_study", str), "brain_extraction": ("brain_extraction", bool)}


def task_settings(task: Path) -> dict[str, Any]:
    """The ricecli settings in mercure's task.json (`process.settings`; when `process` is a
    list of steps, the step whose settings name ricecli's keys); unknown keys are refused."""
    try:
        process = json.loads(task.read_text(encoding="utf-8")).get("process") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"is not a readable task.json ({err})", task,
                         fix="let mercure write it, or remove it to run with the defaults") from err
    steps = process if isinstance(process, list) else [process]
    given: list[dict[str, Any]] = [s["settings"] for s in steps if isinstance(s, dict) and
                                   isinstance(s.get("settings"), dict)]
    found = next((s for s in given if set(s) & set(TASK_SETTINGS)), given[0] if given else {})
    out: dict[str, Any] = {}
    for key, value in found.items():
        if key not in TASK_SETTINGS:
            raise InputError(f"process setting {key!r} is not a ricecli setting", task,
                             fix=f"use only {', '.join(TASK_SETTINGS)} in the module's settings")
        field, kind = TASK_SETTINGS[key]
        if value is not None and not isinstance(value, kind):
            raise InputError(f"process setting {key!r} is {value!r}, not a {kind.__name__}",
                             task, fix=f"give {key} as a JSON {kind.__name__}")
        out[field] = Path(str(value)) if field == "model" and value else value
    return out


def mercure_folders(env: Mapping[str, str], settings: StudySettings
                    ) -> tuple[Path, Path, StudySettings]:
    """IN_DIR, OUT_DIR and the settings (task.json's over the command line's) of a mercure
    module run; a usage error when the variables are not set."""
    in_dir, out_dir = env.get(MERCURE_IN, "").strip(), env.get(MERCURE_OUT, "").strip()
    if not in_dir or not out_dir:
        raise RicenetError("no IN_DIR given, and MERCURE_IN_DIR / MERCURE_OUT_DIR are not set",
                           fix="run 'ricecli study IN_DIR --out OUT_DIR', or set both "
                           "variables (as mercure does for a module)")
    task = Path(in_dir) / TASK_FILE
    if task.is_file():
        settings = replace(settings, **task_settings(task))
    return Path(in_dir), Path(out_dir), settings


def command(
    in_dir: Annotated[Path | None, typer.Argument(
        help="Folder of one patient's studies (any layout): the planning study with its "
        "contrast T1 and RTDOSE, and the follow-up(s). Leave out under mercure "
        "($MERCURE_IN_DIR).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="OUT_DIR, new or empty: SR, parametric map, result.json, overview.png, "
        "status.txt (default under mercure: $MERCURE_OUT_DIR).")] = None,
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    explain: Annotated[bool, typer.Option(
        "--explain/--no-explain", help="Occlusion map as a Parametric Map and overview.png "
        "(about 10 s more on a CPU).")] = True,
    event_study: Annotated[str | None, typer.Option(
        "--event-study", help="StudyInstanceUID of the event study (default: the newest "
        "follow-up with a contrast T1).")] = None,
    brain_extraction: opt.BrainExtractionOpt = True,
) -> None:
    """DICOM in, DICOM out: classify one patient's newest follow-up as a router runs it
    (exit 2 with result.json when an input is missing; research use only)."""
    from ricecli.study import STATUS_FILE, StudySettings, run_study

    settings = StudySettings(model, device, explain, event_study, brain_extraction)
    if in_dir is None:
        in_dir, env_out, settings = mercure_folders(os.environ, settings)
        out = out or env_out
    elif out is None:
        raise RicenetError("--out is missing", in_dir, fix="give --out OUT_DIR (new or empty)")
    outcome = run_study(in_dir, out, settings)
    typer.echo(outcome.status)
    typer.echo(f"written to {out}: {', '.join(outcome.files)} ({outcome.seconds:.1f} s; "
               f"the line above is in {STATUS_FILE})")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)

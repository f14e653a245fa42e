"""`ricecli demo`: simulate one case of each class, classify and explain them, say where it all is.

It needs no data and no GPU: it is the first thing a new user runs, with the shipped model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ricecli.commands import options as opt

if TYPE_CHECKING:
    from ricecli.simulate.case import SimulatedCase


def clear_case_of_each_class(seed: int, limit: int = 20) -> list[SimulatedCase]:
    """The first simulated RICE and recurrence case whose label is also the likelier one.

    Chosen on the simulator's ground truth (its ideal probability), never on the model's
    answer: the demo shows cases a perfect model would get right, not cherry-picked hits.
    """
    from ricecli.simulate.case import SimConfig, simulate_case

    found: dict[str, SimulatedCase] = {}
    for index in range(limit):
        case = simulate_case(index, seed, SimConfig())
        likelier = "recurrence" if case.truth["p_recurrence"] >= 0.5 else "RICE"
        if case.label == likelier:
            found.setdefault(case.label, case)
        if len(found) == 2:
            break
    return [found[k] for k in ("RICE", "recurrence") if k in found]


def command(
    out: Annotated[Path, typer.Option("--out", help="New folder for the demo's outputs.")] = Path(
        "ricenet-demo"),
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed of the two cases.")] = 3,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out folder.")] = False,
) -> None:
    """Simulate a RICE and a recurrence case, classify and explain both (~30 s, 2-core CPU)."""
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from ricecli import pipeline
    from ricecli.explain.occlusion import OcclusionSettings
    from ricecli.inference.engine import describe
    from ricecli.io.files import check_output_dir, input_paths, staged_output
    from ricecli.outputs.record import qa_line
    from ricecli.prepare import CaseInputs
    from ricecli.progress import rich_progress
    from ricecli.result import to_json
    from ricecli.simulate.cohort import write_case

    console = Console(stderr=True)
    start = time.perf_counter()
    in_paths = input_paths(model=model)
    check_output_dir(out, in_paths, overwrite)
    loaded, engine = pipeline.open_model(model, device)
    console.print(f"model: {loaded.name} {loaded.version} ({loaded.path.name}); "
                  f"engine: {describe(engine)}")
    rows: list[tuple[SimulatedCase, dict[str, Any], str | None]] = []
    with staged_output(out, in_paths, overwrite) as stage:
        with console.status("simulating one RICE and one recurrence case"):
            cases = clear_case_of_each_class(seed)
        for sim in cases:
            row = write_case(sim, stage, "nifti")
            folder = stage / "cases" / sim.case_id
            inputs = CaseInputs(post_op=stage / row["post_op"], event=stage / row["event"],
                                dose=stage / row["dose"])
            with console.status(f"{sim.case_id}: preparing and classifying"):
                result = pipeline.classify(inputs, loaded, engine)
            # the JSON names the inputs where they will be, not in the staging folder
            result.result = replace(result.result,
                                    inputs=final_paths(result.result.inputs, stage, out))
            top_in_lesion = None
            if not result.labelled:  # QA failed: no label, nothing to explain
                console.print(f"[red]{sim.case_id}: {qa_line(result.result)}[/]",
                              highlight=False)
            else:
                (folder / "explain").mkdir()
                update, bar = rich_progress(f"{sim.case_id}: occlusion map")
                with bar:
                    pipeline.explain(result, loaded, engine, OcclusionSettings(),
                                     folder / "explain", progress=update)
                top_in_lesion = _top_in_lesion(folder / "explain" / "explain.json")
            record = result.record
            record["truth"] = {"label": sim.label, "p_recurrence": sim.truth["p_recurrence"],
                               "lesion_site": sim.truth["lesion"]["site"],
                               "lesion_centre_event_mm": sim.truth["lesion"]["centre_event_mm"]}
            (folder / "result.json").write_text(to_json(record))
            rows.append((sim, record, top_in_lesion))
        summary = [{"case_id": sim.case_id, "truth": sim.label,
                    "ideal_p_recurrence": sim.truth["p_recurrence"], "predicted": res["label"],
                    "p_recurrence": _p_recurrence(res), "qa_verdict": res["qa"].get("verdict"),
                    "top_5pct_of_map_in_lesion": top}
                   for sim, res, top in rows]
        (stage / "demo.json").write_text(json.dumps(
            {"cases": summary, "seconds": round(time.perf_counter() - start, 1),
             "model": loaded.summary()}, indent=2, default=str) + "\n")

    table = Table(title="ricenet demo (simulated cases; research use only)")
    for col in ("case", "truth", "ideal p(rec)", "predicted", "p(rec)", "votes RICE:rec",
                "top 5 % of map in lesion", "QA"):
        table.add_column(col)
    for sim, res, top in rows:
        p_rec = _p_recurrence(res)  # the calibrated p, as in result.json and overview.png
        votes = ":".join(str(v) for v in (res["votes"] or {}).values()) or "-"
        table.add_row(sim.case_id, sim.label, f"{sim.truth['p_recurrence']:.2f}",
                      res["label"] or "no label", "-" if p_rec is None else f"{p_rec:.3f}",
                      votes, top or "-",
                      str(res["qa"].get("verdict")))
    Console().print(table)
    console.print(
        "truth is the simulator's label; 'ideal p(rec)' is the probability an ideal classifier "
        "knowing every hidden factor would give (docs/simulation.md). The demo takes the first "
        "case of each class whose label is the likelier one; in a cohort, labels are drawn "
        "from that probability, so even a perfect model misses some cases.")
    console.print(
        f"done in {time.perf_counter() - start:.0f} s. Outputs in {out}/: demo.json and "
        "cases/<case>/ with the inputs "
        "(post_op.nii.gz, event.nii.gz, dose.nii.gz), result.json and explain/ "
        "(occlusion.nii.gz on the event scan's grid, overview.png). Open event.nii.gz with "
        "explain/occlusion.nii.gz as an overlay in 3D Slicer or ITK-SNAP.")


def _p_recurrence(result: dict[str, Any]) -> float | None:
    """p(recurrence) of a result, None when QA failed and no answer was given."""
    probs = result.get("probabilities")
    return None if probs is None else probs["recurrence"]


def final_paths(inputs: dict[str, Any], stage: Path, out: Path) -> dict[str, Any]:
    """The inputs record with every path inside the staging folder moved to `out` (where the
    files are once the demo finishes; the staging folder is gone by then)."""
    moved = dict(inputs)
    for key, value in inputs.items():
        if isinstance(value, str) and Path(value).is_relative_to(stage):
            moved[key] = str(Path(out).absolute() / Path(value).relative_to(stage))
    return moved


def _top_in_lesion(explain_json: Path) -> str:
    """"yes (N %)" / "no" / "no lesion": whether the map's top 5 % touches the found lesion."""
    on = json.loads(explain_json.read_text()).get("map_vs_lesion") or {}
    if not (on.get("lesion") or {}).get("voxels"):
        return "no lesion found"
    share = float(on.get("top_fraction_in_lesion") or 0.0)
    return f"yes ({share:.1%})" if on.get("top_touches_lesion") else "no"

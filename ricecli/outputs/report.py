"""Classify one case and report it: the result record (JSON), the rich summary, atomic writes.

`classify_case` is the one code path behind `ricecli classify`, `ricecli batch` and the demo:
prepare (read, register, resample, normalise) -> engine.run -> a plain-JSON result record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ricecli import __version__
from ricecli.errors import OutputError
from ricecli.inference.engine import Engine
from ricecli.inference.model import LoadedModel


@dataclass
class Stopwatch:
    """Wall time per named stage, in the order the stages ran."""

    timings_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = self.timings_s.get(name, 0.0) + time.perf_counter() - start


def case_inputs_record(inputs) -> dict:
    """The CaseInputs as plain JSON (paths as given, dose options)."""
    keys = ("post_op", "event", "dose", "mask", "dose_unit", "dose_fractions", "dose_frame",
            "dose_relative_scale_gy")
    return {k: _plain(getattr(inputs, k, None)) for k in keys}


def classify_case(inputs, model: LoadedModel, engine: Engine,
                  save_prepared: Path | None = None, overwrite: bool = False,
                  keep_case: bool = False, accept_qa_failure: bool = False) -> dict:
    """Prepare one case in the model's space, run the engine, and build its result record.

    A case whose QA verdict is fail gets no label (see `withhold_answer`) unless
    `accept_qa_failure`, which keeps the label and marks it as given despite the failure.
    """
    from ricecli.prepare import prepare_case, to_tensor

    watch = Stopwatch()
    start = time.perf_counter()
    with watch.stage("prepare"):
        case = prepare_case(inputs, model.spec)
    if save_prepared is not None:
        with watch.stage("save_prepared"):
            save_prepared_case(case, Path(save_prepared), inputs, overwrite)
    with watch.stage("infer"):
        probs, members = engine.run(to_tensor(case, model.spec)[None])
    timings = {**prepare_timings(case), **watch.timings_s}
    timings["total"] = time.perf_counter() - start
    result = build_result(probs[0], members[0], model, engine, getattr(case, "qa", {}) or {},
                          timings, case_inputs_record(inputs))
    if save_prepared is not None:
        result["prepared_dir"] = str(save_prepared)
    if qa_failed(result):
        if accept_qa_failure:
            result["label_despite_qa_failure"] = True
        else:
            withhold_answer(result)
    if keep_case:
        result["_case"] = case  # for callers that go on (explain); dropped by to_json
    return result


def save_prepared_case(case, out_dir: Path, inputs, overwrite: bool) -> None:
    """Write the prepared channels through the staged-output rule (nothing half-written)."""
    from ricecli.io.files import staged_output
    from ricecli.prepare import write_prepared

    with staged_output(out_dir, inputs.paths(), overwrite) as tmp:
        write_prepared(case, tmp)


def prepare_timings(case) -> dict:
    """Sub-stage timings (read, register, resample, ...) if preparation recorded them."""
    found = getattr(case, "timings_s", None)
    if found is None:
        found = (getattr(case, "qa", None) or {}).get("timings_s")
    if not isinstance(found, dict):
        return {}
    return {f"prepare.{k}": float(v) for k, v in found.items() if isinstance(v, (int, float))}


def build_result(probs: np.ndarray, members: np.ndarray, model: LoadedModel, engine: Engine,
                 qa: dict, timings_s: dict, inputs: dict) -> dict:
    """The result record: label, probabilities, member votes, QA, timings, model, inputs."""
    classes = list(model.spec.classes)
    probs = np.asarray(probs, dtype=np.float64)
    label = classes[int(np.argmax(probs))]
    member_rows = []
    votes = dict.fromkeys(classes, 0)
    for i, p in enumerate(np.asarray(members, dtype=np.float64)):
        vote = classes[int(np.argmax(p))]
        votes[vote] += 1
        member_rows.append({"member": i, "vote": vote, "probabilities":
                            {c: float(v) for c, v in zip(classes, p, strict=True)}})
    result = {
        "label": label,
        "probabilities": {c: float(v) for c, v in zip(classes, probs, strict=True)},
        "decision": "argmax of the ensemble's mean probability",
        "votes": votes,
        "members": member_rows,
        "qa": _plain(qa),
        "warnings": qa_warnings(qa),
        "timings_s": {k: round(float(v), 4) for k, v in timings_s.items()},
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256,
                  "path": str(model.path)},
        "engine": {"name": engine.name, "providers": list(engine.providers),
                   "fallback": getattr(engine, "fallback", None)},
        "inputs": inputs,
        "ricecli_version": __version__,
    }
    from ricecli.inference.calibration import apply_to_result  # calibrated p, raw p, uncertainty

    return apply_to_result(result, probs, members, model.spec)


def qa_failed(result: dict) -> bool:
    """True when the case's QA verdict is fail (the answer cannot be trusted)."""
    return (result.get("qa") or {}).get("verdict") == "fail"


def withhold_answer(result: dict) -> dict:
    """No label for a case that failed QA: label, probabilities and votes become null."""
    result.update(label=None, probabilities=None, votes=None, members=[],
                  probabilities_raw=None, uncertainty=None,
                  decision="no label: the QA verdict is fail (see qa.reasons); rerun with "
                  "--accept-qa-failure to get the label anyway")
    return result


def qa_line(result: dict) -> str:
    """One line saying why a case failed QA."""
    reasons = (result.get("qa") or {}).get("reasons") or ["no reason recorded"]
    return f"QA failed, no label: {'; '.join(reasons)}"


def qa_warnings(qa: object, prefix: str = "") -> list[str]:
    """Every string under a `warnings` key anywhere in the QA record, with its section."""
    out: list[str] = []
    if isinstance(qa, dict):
        for key, value in qa.items():
            where = f"{prefix}{key}"
            if key == "warnings" and isinstance(value, (list, tuple)):
                sect = prefix.rstrip(".")
                out += [f"{sect}: {w}" if sect else str(w) for w in value]
            elif key == "warning" and isinstance(value, str) and value:
                out.append(f"{prefix.rstrip('.')}: {value}" if prefix else value)
            else:
                out += qa_warnings(value, where + ".")
    elif isinstance(qa, (list, tuple)):
        for item in qa:
            out += qa_warnings(item, prefix)
    return out


def _plain(value: object) -> object:
    """JSON-safe copy: numpy scalars/arrays, paths, tuples, sets made plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def to_json(result: dict) -> str:
    """The result as indented JSON (private keys such as `_case` left out)."""
    return json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2,
                      sort_keys=False) + "\n"


def check_output_file(path: Path, inputs: list | None = None, overwrite: bool = True) -> Path:
    """Refuse an output file that is an input, lies inside one, is a folder, exists (unless
    `overwrite`), or cannot be written (ricecli.io.files.check_output_file)."""
    from ricecli.io.files import check_output_file as check_file

    path = Path(path)
    for p in inputs or []:
        if p and Path(p).exists() and path.exists() and Path(p).resolve() == path.resolve():
            raise OutputError("the output would overwrite an input", path,
                              fix="choose another output file name")
    check_file(path, [p for p in inputs or [] if p], overwrite)
    return path


def write_text_atomic(path: Path, text: str, inputs: list | None = None,
                      overwrite: bool = True) -> Path:
    """Write a file whole or not at all (temp file beside it, then rename); never an input."""
    from ricecli.io.files import write_atomic

    path = check_output_file(path, inputs, overwrite)
    with write_atomic(path, inputs or [], overwrite) as tmp:
        tmp.write_text(text)
    return path


def print_summary(result: dict, console=None) -> None:
    """The rich summary: label, p(recurrence), votes, QA warnings, stage timings."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if result.get("label") is None:
        console.print(f"[bold red]{qa_line(result)}[/]", highlight=False)
        _print_qa(result, console)
        console.print("[dim]research software, not for clinical use[/]")
        return
    if result.get("label_despite_qa_failure"):
        console.print(f"[bold red]QA failed; label given anyway (--accept-qa-failure), do not "
                      f"trust it:[/] {'; '.join(result['qa'].get('reasons', []))}",
                      highlight=False)
    probs = result["probabilities"]
    colour = "red" if result["label"] == "recurrence" else "green"
    console.print(f"[bold {colour}]{result['label']}[/]  "
                  f"p(recurrence) = {probs.get('recurrence', float('nan')):.3f}  "
                  f"p(RICE) = {probs.get('RICE', float('nan')):.3f}")
    from ricecli.inference.calibration import summary_lines

    for line in summary_lines(result):
        console.print(line, highlight=False)
    votes = ", ".join(f"{k}: {v}" for k, v in result["votes"].items())
    console.print(f"ensemble votes ({len(result['members'])} members): {votes}")
    table = Table(title="members", show_edge=False)
    table.add_column("member")
    table.add_column("vote")
    table.add_column("p(recurrence)", justify="right")
    for m in result["members"]:
        table.add_row(str(m["member"]), m["vote"], f"{m['probabilities'].get('recurrence', 0):.3f}")
    console.print(table)
    _print_qa(result, console)
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in result["timings_s"].items())
    console.print(f"timings: {stages}")
    model = result["model"]
    console.print(f"model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}), "
                  f"engine {result['engine']['name']}")
    console.print("[dim]research software, not for clinical use[/]")


def _print_qa(result: dict, console) -> None:
    """The QA verdict, every warning and every note of the QA record (none left off)."""
    qa = result.get("qa") or {}
    verdict = qa.get("verdict")
    if verdict is not None:
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(verdict, "white")
        console.print(f"QA: [{colour}]{verdict}[/]", highlight=False)
    for w in result.get("warnings") or []:
        console.print(f"[yellow]QA warning:[/] {w}", highlight=False)
    extra = [r for r in qa.get("reasons") or [] if not any(r in w for w in
                                                           result.get("warnings") or [])]
    if verdict != "fail":
        for r in extra:
            console.print(f"[yellow]QA warning:[/] {r}", highlight=False)
    for n in qa.get("notes") or []:
        console.print(f"[dim]QA note:[/] {n}", highlight=False)
    if qa.get("brain_mask"):
        console.print(f"brain mask: {qa['brain_mask']}", highlight=False)
    if verdict is None and not result.get("warnings") and not qa.get("notes"):
        console.print("QA: no warnings")

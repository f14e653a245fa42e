"""The one path a case takes: read -> gate -> register -> prepare -> infer -> record -> explain.

`ricecli classify`, `explain`, `batch` and the demo all call these few functions, so a case is
prepared, classified, refused on QA and explained the same way whichever command runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ricecli.explain.lesion import GivenMask, find_lesion, lesion_from_mask
from ricecli.explain.occlusion import ExplainResult, OcclusionSettings, explain_case
from ricecli.inference.engine import Engine, describe, open_engine
from ricecli.inference.model import LoadedModel, load_model
from ricecli.io.files import staged_output
from ricecli.outputs.explain_files import write_explain
from ricecli.outputs.record import build_result, case_inputs_record, qa_failed, withhold_answer
from ricecli.prepare import CaseInputs, PreparedCase, prepare_case, to_tensor, write_prepared


@dataclass
class CaseResult:
    """One classified case: the JSON record and the prepared case it came from."""

    record: dict[str, Any]  # JSON-ready; record["label"] is None when QA failed (not accepted)
    case: PreparedCase  # the model-space channels, QA and geometry (explain needs them)

    @property
    def labelled(self) -> bool:
        """True when the case got a label (QA passed, or its failure was accepted)."""
        return self.record.get("label") is not None


@dataclass
class Stopwatch:
    """Wall time per named stage, in the order the stages ran."""

    timings_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the `with` block to stage `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = self.timings_s.get(name, 0.0) + time.perf_counter() - start


def open_model(model: Path | None, device: str) -> tuple[LoadedModel, Engine]:
    """Load the model (None: the shipped one) and open its engine on `device`."""
    loaded = load_model(model)
    return loaded, open_engine(loaded, device)


def classify(inputs: CaseInputs, model: LoadedModel, engine: Engine, *,
             save_prepared: Path | None = None, overwrite: bool = False,
             accept_qa_failure: bool = False) -> CaseResult:
    """Prepare one case in the model's space, run the engine, and build its result record.

    A case whose QA verdict is fail gets no label (see `withhold_answer`) unless
    `accept_qa_failure`, which keeps the label and marks it as given despite the failure.
    """
    watch = Stopwatch()
    start = time.perf_counter()
    with watch.stage("prepare"):
        case = prepare_case(inputs, model.spec)  # read, gate, register, resample, QA
    if save_prepared is not None:
        with watch.stage("save_prepared"):
            save_prepared_case(case, Path(save_prepared), inputs, overwrite)
    with watch.stage("infer"):
        probs, members = engine.run(to_tensor(case, model.spec)[None])
    timings = {**prepare_timings(case), **watch.timings_s}
    timings["total"] = time.perf_counter() - start
    record = build_result(probs[0], members[0], model, engine, case.qa, timings,
                          case_inputs_record(inputs))
    if save_prepared is not None:
        record["prepared_dir"] = str(save_prepared)
    if qa_failed(record):
        if accept_qa_failure:
            record["label_despite_qa_failure"] = True
        else:
            withhold_answer(record)
    return CaseResult(record, case)


def save_prepared_case(case: PreparedCase, out_dir: Path, inputs: CaseInputs,
                       overwrite: bool) -> None:
    """Write the prepared channels and qa.json through staged_output (nothing half-written)."""
    with staged_output(out_dir, inputs.paths(), overwrite) as tmp:
        write_prepared(case, tmp)


def prepare_timings(case: PreparedCase) -> dict[str, float]:
    """Sub-stage timings of preparation (read, brain, register, ...) as `prepare.<stage>`."""
    found = (case.qa or {}).get("timings_s")
    if not isinstance(found, dict):
        return {}
    return {f"prepare.{k}": float(v) for k, v in found.items() if isinstance(v, (int, float))}


def explain_record(result: CaseResult, model: LoadedModel, engine: Engine) -> dict[str, Any]:
    """What explain.json says about the case besides its maps: label, inputs, QA, model."""
    record = result.record
    out = {"label": record.get("label"), "classification": record.get("probabilities"),
           "classification_uncalibrated": record.get("probabilities_uncalibrated"),
           "inputs": record.get("inputs"), "qa": record.get("qa"),
           "prepare_s": round(float((record.get("timings_s") or {}).get("prepare", 0.0)), 3),
           "model": model.summary(), "engine": describe(engine)}
    if record.get("label_despite_qa_failure"):
        out["label_despite_qa_failure"] = True
    return out


def explain(result: CaseResult, model: LoadedModel, engine: Engine, settings: OcclusionSettings,
            folder: Path, extra: dict[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None,
            lesion_mask: GivenMask | None = None) -> ExplainResult:
    """Occlusion maps of a classified case, written into `folder` (occlusion*.nii.gz,
    overview.png, explain.json); the caller owns `folder` (usually a staging folder).

    The maps are in calibrated delta p; the overview is cut through the enhancing lesion
    (`lesion_mask`, else the one found in the prepared channels) and the strongest region.
    """
    explained = explain_case(result.case, model, engine, settings, progress=progress)
    lesion = find_lesion(result.case) if lesion_mask is None else \
        lesion_from_mask(lesion_mask.image, lesion_mask.path, result.case)
    record = result.record
    spread = (record.get("uncertainty") or {}).get("member_sd_p_recurrence")
    write_explain(explained, result.case, Path(folder), model.spec.classes,
                  p_shown=float(record["probabilities"][explained.target]),
                  spread=None if spread is None else float(spread), lesion=lesion,
                  extra={**explain_record(result, model, engine), **(extra or {})})
    return explained


def write_unexplained(result: CaseResult, model: LoadedModel, engine: Engine,
                      folder: Path) -> None:
    """explain.json for a case that got no label (QA failed): no maps, the QA says why."""
    record = explain_record(result, model, engine)
    (Path(folder) / "explain.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def write_dicom(result: CaseResult, out_dir: Path, explained: ExplainResult | None = None
                ) -> list[Path]:
    """--dicom-out: the SR of a labelled case (and its occlusion map as a Parametric Map when
    explained), referencing the event series; nothing for a case without a label."""
    from ricecli.outputs.dicom import write_dicom_outputs  # pydicom, highdicom

    event = Path(result.record["inputs"]["event"])
    if explained is None:
        return write_dicom_outputs(out_dir, result.record, event)
    return write_dicom_outputs(out_dir, result.record, event, explained.event_maps["all"],
                               explained.target)

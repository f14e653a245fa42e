"""The one path a case takes: read -> gate -> register -> prepare -> infer -> record -> explain.

`ricecli classify`, `explain`, `batch` and the demo all call these few functions, so a case is
prepared, classified, refused on QA and explained the same way whichever command runs it.
"""

from __future__ import annotations

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
from ricecli.outputs.record import build_result, case_inputs_record
from ricecli.prepare import CaseInputs, PreparedCase, prepare_case, to_tensor, write_prepared
from ricecli.result import SCHEMA_VERSION, CaseResult, qa_record, to_json, to_record


@dataclass
class Classified:
    """One classified case: its result and the prepared case it came from (explain needs
    the channels); `dicom_header_notes`: how --dicom-out made the event headers valid."""

    result: CaseResult
    case: PreparedCase
    dicom_header_notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """True when the case got a label (QA passed, or its failure was accepted)."""
        return self.result.labelled

    @property
    def record(self) -> dict[str, Any]:
        """The result as JSON data (result.json, `classify --json`)."""
        record = to_record(self.result)
        if self.dicom_header_notes:
            record["dicom_header_notes"] = list(self.dicom_header_notes)
        return record


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
             accept_qa_failure: bool = False) -> Classified:
    """Prepare one case in the model's space, run the engine, and build its result.

    A case whose QA verdict is fail gets no label unless `accept_qa_failure`, which keeps the
    label and marks it as given despite the failure (outputs.record.build_result).
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
    result = build_result(probs[0], members[0], model, engine, case.qa, timings,
                          case_inputs_record(inputs), accept_qa_failure=accept_qa_failure,
                          prepared_dir=None if save_prepared is None else str(save_prepared))
    return Classified(result, case)


def save_prepared_case(case: PreparedCase, out_dir: Path, inputs: CaseInputs,
                       overwrite: bool) -> None:
    """Write the prepared channels and qa.json through staged_output (nothing half-written)."""
    with staged_output(out_dir, inputs.paths(), overwrite) as tmp:
        write_prepared(case, tmp, inputs)


def prepare_timings(case: PreparedCase) -> dict[str, float]:
    """Sub-stage timings of preparation (read, brain, register, ...) as `prepare.<stage>`."""
    return {f"prepare.{k}": v for k, v in case.timings_s.items()}


def explain_record(classified: Classified, model: LoadedModel, engine: Engine
                   ) -> dict[str, Any]:
    """What explain.json says about the case besides its maps: label, inputs, QA, model."""
    result = classified.result
    return {"schema_version": SCHEMA_VERSION, "label": result.label,
            "classification": result.probabilities,
            "classification_uncalibrated": result.probabilities_uncalibrated,
            "inputs": result.inputs, "qa": qa_record(result.qa),
            "prepare_s": round(result.timings_s.get("prepare", 0.0), 3),
            "model": model.summary(), "engine": describe(engine),
            "label_despite_qa_failure": result.label_despite_qa_failure}


def explain(classified: Classified, model: LoadedModel, engine: Engine, settings: OcclusionSettings,
            folder: Path, extra: dict[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None,
            lesion_mask: GivenMask | None = None) -> ExplainResult:
    """Occlusion maps of a classified case, written into `folder` (occlusion*.nii.gz,
    overview.png, explain.json); the caller owns `folder` (usually a staging folder).

    The maps are in calibrated delta p; the overview is cut through the enhancing lesion
    (`lesion_mask`, else the one found in the prepared channels) and the strongest region.
    """
    case, result = classified.case, classified.result
    if result.probabilities is None:
        raise ValueError("explain needs a labelled case")
    explained = explain_case(case, model, engine, settings, progress=progress)
    lesion = find_lesion(case) if lesion_mask is None else \
        lesion_from_mask(lesion_mask.image, lesion_mask.path, case)
    spread = (result.uncertainty or {}).get("member_sd_p_recurrence")
    write_explain(explained, case, Path(folder), model.spec.classes,
                  p_shown=result.probabilities[explained.target],
                  spread=None if spread is None else float(spread), lesion=lesion,
                  extra={**explain_record(classified, model, engine), **(extra or {})})
    return explained


def write_unexplained(classified: Classified, model: LoadedModel, engine: Engine,
                      folder: Path) -> None:
    """explain.json for a case that got no label (QA failed): no maps, the QA says why."""
    record = explain_record(classified, model, engine)
    (Path(folder) / "explain.json").write_text(to_json(record))


def write_dicom(result: Classified, out_dir: Path, explained: ExplainResult | None = None
                ) -> list[Path]:
    """--dicom-out: the SR of a labelled case (and its occlusion map as a Parametric Map when
    explained), referencing the event series; nothing for a case without a label."""
    from ricecli.outputs.dicom import write_dicom_outputs  # pydicom, highdicom

    series = result.case.event_series  # read once, with the event scan
    record = result.record
    written = write_dicom_outputs(out_dir, record, series) if explained is None else \
        write_dicom_outputs(out_dir, record, series, explained.event_maps["all"],
                            explained.target)
    result.dicom_header_notes[:] = record.get("dicom_header_notes") or []
    return written

"""The result on screen (rich): label, p(recurrence), calibration, votes, QA, timings, model.

Everything the result holds about trust (QA verdict, warnings, notes) is printed; a case
without a label says why in one red line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ricecli.outputs.record import qa_line
from ricecli.result import CaseResult, QAReport

if TYPE_CHECKING:
    from rich.console import Console

RESEARCH_LINE = "[dim]research software, not for clinical use[/]"


def print_summary(result: CaseResult, console: Console | None = None) -> None:
    """The rich summary: label, p(recurrence), votes, QA warnings, stage timings."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if result.probabilities is None or result.votes is None:
        console.print(f"[bold red]{qa_line(result)}[/]", highlight=False)
        print_qa(result.qa, console, verdict_line=False)
        console.print(RESEARCH_LINE)
        return
    if result.label_despite_qa_failure:
        console.print("[bold red]QA failed; label given anyway (--accept-qa-failure), do not "
                      f"trust it:[/] {'; '.join(f.message for f in result.qa.reasons)}",
                      highlight=False)
    probs = result.probabilities
    colour = "red" if result.label == "recurrence" else "green"
    console.print(f"[bold {colour}]{result.label}[/]  "
                  f"p(recurrence) = {probs.get('recurrence', float('nan')):.3f}  "
                  f"p(RICE) = {probs.get('RICE', float('nan')):.3f}")
    for line in calibration_lines(result):
        console.print(line, highlight=False)
    votes = ", ".join(f"{k}: {v}" for k, v in result.votes.items())
    console.print(f"ensemble votes ({len(result.members)} members): {votes}")
    table = Table(title="members", show_edge=False)
    table.add_column("member")
    table.add_column("vote")
    table.add_column("p(recurrence)", justify="right")
    for i, m in enumerate(result.members):  # calibrated like the line above (raw: JSON only)
        table.add_row(str(i), m.vote, f"{m.probabilities_calibrated.get('recurrence', 0.0):.3f}")
    console.print(table)
    print_qa(result.qa, console)
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in result.timings_s.items())
    console.print(f"timings: {stages}")
    model = result.model
    console.print(f"model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}), "
                  f"engine {result.engine['name']}")
    console.print(RESEARCH_LINE)


def calibration_lines(result: CaseResult) -> list[str]:
    """Rich-markup lines: calibration, the members' spread, the uncertain flag.

    Only calibrated numbers are shown: the uncalibrated p lives in the JSON and the SR alone.
    """
    cal, unc = result.calibration, result.uncertainty
    if not cal or not unc:
        return []
    lines = [f"calibrated: temperature {cal['temperature']:.2f} on each member, fitted "
             "out-of-fold" if cal.get("applied")
             else "probabilities uncalibrated (this model carries no calibration)"]
    lo, hi = (unc.get("member_range_p_recurrence") or [float("nan")] * 2)
    spread = (f"members: SD of p(recurrence) {unc['member_sd_p_recurrence']:.3f} (range "
              f"{lo:.3f}-{hi:.3f}), agreement {unc['agreement']:.0%}")
    if "prediction_set" in unc:
        spread += (f"; {unc['coverage']:.0%} prediction set "
                   f"{{{', '.join(unc['prediction_set'])}}}")
    lines.append(spread)
    if unc["uncertain"]:
        lines.append("[bold yellow]UNCERTAIN:[/] " + "; ".join(unc["reasons"]))
    return lines


def print_qa(qa: QAReport, console: Console, verdict_line: bool = True) -> None:
    """The QA verdict, every warning and every note of the QA report (none left off)."""
    if verdict_line:
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(qa.verdict, "white")
        console.print(f"QA: [{colour}]{qa.verdict}[/]", highlight=False)
    for w in qa.warnings:
        console.print(f"[yellow]QA warning:[/] {w.message}", highlight=False)
    for n in qa.notes:
        console.print(f"[dim]QA note:[/] {n}", highlight=False)
    if qa.measures.get("brain_mask"):
        console.print(f"brain mask: {qa.measures['brain_mask']}", highlight=False)


def qa_lines(qa: QAReport) -> list[str]:
    """Plain lines: the verdict with the findings behind it, then every note (nothing in
    qa.json is left off the screen)."""
    why = "; ".join(f.message for f in qa.why())
    lines = [f"QA {qa.verdict}" + (f": {why}" if why else "")]
    if qa.verdict == "fail":
        lines += [f"QA warning: {w.message}" for w in qa.warnings]
    lines += [f"note: {n}" for n in qa.notes]
    if qa.measures.get("brain_mask"):
        lines.append(f"brain mask: {qa.measures['brain_mask']}")
    return lines

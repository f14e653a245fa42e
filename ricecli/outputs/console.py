"""The result on screen (rich): label, p(recurrence), calibration, votes, QA, timings, model.

Everything the result record holds about trust (QA verdict, warnings, notes) is printed; a
case without a label says why in one red line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ricecli.inference.calibration import summary_lines
from ricecli.outputs.record import qa_line

if TYPE_CHECKING:
    from rich.console import Console

RESEARCH_LINE = "[dim]research software, not for clinical use[/]"


def print_summary(result: dict[str, Any], console: Console | None = None) -> None:
    """The rich summary: label, p(recurrence), votes, QA warnings, stage timings."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if result.get("label") is None:
        console.print(f"[bold red]{qa_line(result)}[/]", highlight=False)
        print_qa(result, console)
        console.print(RESEARCH_LINE)
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
    for line in summary_lines(result):
        console.print(line, highlight=False)
    votes = ", ".join(f"{k}: {v}" for k, v in result["votes"].items())
    console.print(f"ensemble votes ({len(result['members'])} members): {votes}")
    table = Table(title="members", show_edge=False)
    table.add_column("member")
    table.add_column("vote")
    table.add_column("p(recurrence)", justify="right")
    for m in result["members"]:  # calibrated like the line above (uncalibrated: JSON only)
        p = (m.get("probabilities_calibrated") or m["probabilities"]).get("recurrence", 0.0)
        table.add_row(str(m["member"]), m["vote"], f"{p:.3f}")
    console.print(table)
    print_qa(result, console)
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in result["timings_s"].items())
    console.print(f"timings: {stages}")
    model = result["model"]
    console.print(f"model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}), "
                  f"engine {result['engine']['name']}")
    console.print(RESEARCH_LINE)


def print_qa(result: dict[str, Any], console: Console) -> None:
    """The QA verdict, every warning and every note of the QA record (none left off)."""
    qa = result.get("qa") or {}
    warnings = result.get("warnings") or []
    verdict = qa.get("verdict")
    if verdict is not None and result.get("label", "") is not None:  # else qa_line said it
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(verdict, "white")
        console.print(f"QA: [{colour}]{verdict}[/]", highlight=False)
    for w in warnings:
        console.print(f"[yellow]QA warning:[/] {w}", highlight=False)
    if verdict != "fail":
        for r in qa.get("reasons") or []:
            if not any(r in w for w in warnings):
                console.print(f"[yellow]QA warning:[/] {r}", highlight=False)
    for n in qa.get("notes") or []:
        console.print(f"[dim]QA note:[/] {n}", highlight=False)
    if qa.get("brain_mask"):
        console.print(f"brain mask: {qa['brain_mask']}", highlight=False)
    if verdict is None and not warnings and not qa.get("notes"):
        console.print("QA: no warnings")

"""One look for every progress bar: what, bar, done/total, elapsed, ETA (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console | None = None, *extra: ProgressColumn,
                 transient: bool = False) -> Progress:
    """A rich Progress with the house columns; `extra` columns go after done/total."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *extra, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=transient)


def rich_progress(description: str = "occlusion") -> tuple[Callable[[int, int], None], Progress]:
    """A (callback(done, total), bar) pair: use the bar as a context manager, pass the callback
    to a long loop (explain's occlusion) so that it shows done/total and an ETA on stderr."""
    bar = progress_bar(transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar

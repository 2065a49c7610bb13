"""Shared rich helpers for the CLI: one console, one progress-bar style."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(soft_wrap=True)  # never wrap lines: output is often read by scripts and tests


COLUMNS = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
           TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[tuple[Progress, int]]:
    with Progress(*COLUMNS, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield progress, task


class StageBars:
    """One progress bar per stage of a multi-stage run (the demo); a finished stage keeps its summary line."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: int | None = None
        self.stage = ""

    def begin(self, stage: str, total: int | None = None) -> None:
        self.stage = stage
        self.task = self.progress.add_task(stage, total=total)

    def update(self, completed: int | None = None, total: int | None = None, note: str = "") -> None:
        description = f"{self.stage}  {note}" if note else self.stage
        self.progress.update(self.task, completed=completed, total=total, description=description)

    def end(self, summary: str) -> None:
        task = self.progress.tasks[self.task]
        self.progress.update(self.task, total=task.total or 1, completed=task.total or 1,
                             description=f"{self.stage}: [green]{summary}[/]")

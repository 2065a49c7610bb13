"""Shared rich helpers for the CLI: one console, one progress-bar style."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(soft_wrap=True)  # never wrap lines: output is often read by scripts and tests


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[tuple[Progress, int]]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield progress, task

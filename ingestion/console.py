"""What a person sees: a progress bar per endpoint while pages come in, then a one-screen
summary of the run (rich)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from ingestion.pipeline import IngestionResult


class PageProgress:
    """One bar per endpoint (pages read / pages planned); no-ops when disabled."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def _task(self, endpoint: str) -> TaskID | None:
        if self._progress is None:
            return None
        if endpoint not in self._tasks:
            self._tasks[endpoint] = self._progress.add_task(endpoint, total=None)
        return self._tasks[endpoint]

    def on_plan(self, endpoint: str, pages: int | None) -> None:
        task = self._task(endpoint)
        if task is not None and self._progress is not None:
            self._progress.reset(task, total=pages)

    def on_page(self, endpoint: str) -> None:
        task = self._task(endpoint)
        if task is not None and self._progress is not None:
            self._progress.advance(task)


@contextmanager
def page_progress(enabled: bool | None, console: Console | None = None) -> Iterator[PageProgress]:
    console = console or Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield PageProgress(None)
        return
    progress = Progress(
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages"),
        TimeElapsedColumn(),
        console=console,
        redirect_stderr=False,
        redirect_stdout=False,
    )
    with progress:
        yield PageProgress(progress)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _counter(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"


def print_summary(result: IngestionResult, console: Console | None = None) -> None:
    """The run on one screen: per endpoint, per raw table, drift and rejects."""
    # Not a terminal (a log, a pipe): wide enough for one row per endpoint.
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"ingestion run {result.run_id}", title_justify="left", box=SIMPLE_HEAD)
    table.add_column("endpoint", no_wrap=True)
    for name in ("pages", "records", "API total", "rejected", "requests"):
        table.add_column(name, justify="right")
    table.add_column("retries")
    table.add_column("errors")
    table.add_column("MB", justify="right")
    table.add_column("s", justify="right")
    for s in result.endpoints.values():
        table.add_row(
            s.endpoint,
            _count(s.pages),
            _count(s.records),
            _count(s.api_total),
            _count(s.rejected),
            _count(s.requests),
            _counter(s.retries),
            _counter(s.http_errors),
            f"{s.bytes / 1e6:.1f}",
            f"{s.seconds:.1f}",
        )
    console.print(table)

    where = f"raw in the lake {result.destination}" if result.destination else "raw"
    changes = Table(title=where, title_justify="left", box=SIMPLE_HEAD)
    for name in ("table", "rows added", "versions retired", "current"):
        changes.add_column(name, justify="left" if name == "table" else "right")
    for change in result.tables.values():
        changes.add_row(
            change.table, _count(change.added), _count(change.retired), _count(change.current)
        )
    console.print(changes)

    for s in result.endpoints.values():
        if s.new_fields:
            fields = ", ".join(f"{f} -> column {c}" for f, c in s.new_fields.items())
            console.print(f"[yellow]schema drift[/]: {s.endpoint} has new field(s): {fields}")
        if s.rejected:
            reasons = ", ".join(f"{r} ({n})" for r, n in s.rejected_by_reason.most_common(3))
            console.print(
                f"[yellow]rejected[/]: {s.endpoint}: {s.rejected} record(s) in raw._rejected: "
                f"{reasons}"
            )
        if s.rereads:
            console.print(f"[yellow]re-read[/]: {s.endpoint} was read {s.rereads + 1} times")
    loads = ", ".join(f"{s.endpoint} {s.load_id}" for s in result.endpoints.values())
    rate = result.records / result.seconds if result.seconds else 0.0
    console.print(
        f"[green]ok[/]: {result.records:,} records ({rate:,.0f}/s), "
        f"{result.items_added:,} {'' if result.destination else 'new '}listen items, "
        f"in {result.seconds:.1f}s"
    )
    console.print(f"load ids: {loads}")

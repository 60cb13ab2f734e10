"""What a person sees: a progress bar per endpoint while pages come in, then a one-screen
summary of the run (rich)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from ingestion.pipeline import IngestionResult


@contextmanager
def page_progress(enabled: bool | None) -> Iterator[tuple[Callable, Callable]]:
    """(on_plan(endpoint, pages), on_page(endpoint)): one bar per endpoint; enabled None: when
    stderr is a terminal."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<15}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("pages"), TimeElapsedColumn())  # fmt: skip
    disable = not (console.is_terminal if enabled is None else enabled)
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console, disable=disable) as progress:

        def task(endpoint: str) -> int:
            if endpoint not in tasks:
                tasks[endpoint] = progress.add_task(endpoint, total=None)
            return tasks[endpoint]

        yield (
            (lambda e, pages: progress.reset(task(e), total=pages)),
            (lambda e: progress.advance(task(e))),
        )


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _counter(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"


def print_summary(result: IngestionResult, console: Console | None = None) -> None:
    """The run on one screen: per endpoint, per table, drift and rejects."""
    # Not a terminal (a log, a pipe): wide enough for one row per endpoint.
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"ingestion run {result.run_id}", title_justify="left", box=SIMPLE_HEAD)
    for name in ("endpoint", "pages", "records", "API total", "rejected", "requests", "retries",
                 "errors", "MB", "s"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("endpoint", "retries") else "right")
    for s in result.endpoints.values():
        table.add_row(s.endpoint, _n(s.pages), _n(s.records), _n(s.api_total), _n(s.rejected),
                      _n(s.requests), _counter(s.retries), _counter(s.http_errors),
                      f"{s.bytes / 1e6:.1f}", f"{s.seconds:.1f}")  # fmt: skip
    console.print(table)
    where = f"raw in {result.destination}" if result.destination else "raw"
    changes = Table(title=where, title_justify="left", box=SIMPLE_HEAD)
    for name in ("table", "rows added", "versions retired", "current"):
        changes.add_column(name, justify="left" if name == "table" else "right")
    for c in result.tables.values():
        changes.add_row(c.table, _n(c.added), _n(c.retired), _n(c.current))
    console.print(changes)
    for s in result.endpoints.values():
        if s.new_fields:
            fields = ", ".join(f"{f} -> column {c}" for f, c in s.new_fields.items())
            console.print(f"[yellow]schema drift[/]: {s.endpoint} has new field(s): {fields}")
        if s.rejected:
            reasons = ", ".join(f"{r} ({n})" for r, n in s.rejected_by_reason.most_common(3))
            console.print(f"[yellow]rejected[/]: {s.endpoint}: {s.rejected} record(s) in "
                          f"raw._rejected: {reasons}")  # fmt: skip
        if s.rereads:
            console.print(f"[yellow]re-read[/]: {s.endpoint} was read {s.rereads + 1} times")
    rate = result.records / result.seconds if result.seconds else 0.0
    console.print(f"[green]ok[/]: {result.records:,} records ({rate:,.0f}/s), "
                  f"{result.items_added:,} listen items added, "
                  f"in {result.seconds:.1f}s")  # fmt: skip
    console.print("load ids: " + ", ".join(f"{s.endpoint} {s.load_id}"
                                           for s in result.endpoints.values()))  # fmt: skip

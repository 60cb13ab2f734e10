"""The one-screen summary of a run (rich). Progress bars while it runs are dlt's own (tqdm)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ingestion.pipeline import IngestionResult

ENDPOINT_COLUMNS = ("endpoint", "pages", "records", "API total", "rejected", "requests")
TABLE_COLUMNS = ("table", "rows added", "versions retired", "current")


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _counter(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """Text columns (the first, retries, errors) left, numbers right."""
    table = Table(title=title, title_justify="left", box=SIMPLE_HEAD)
    for name in columns:
        left = name in (columns[0], "retries", "errors")
        table.add_column(name, justify="left" if left else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_summary(result: IngestionResult, console: Console | None = None) -> None:
    """The run on one screen: per endpoint, per table, drift and rejects."""
    # Not a terminal (a log, a pipe): wide enough for one row per endpoint.
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    endpoints = [
        (
            s.endpoint,
            *map(_n, (s.pages, s.records, s.api_total, s.rejected, s.requests)),
            _counter(s.retries),
            _counter(s.http_errors),
            f"{s.bytes / 1e6:.1f}",
            f"{s.seconds:.1f}",
        )
        for s in result.endpoints.values()
    ]
    columns = (*ENDPOINT_COLUMNS, "retries", "errors", "MB", "s")
    console.print(_table(f"ingestion run {result.run_id}", columns, endpoints))
    tables = [(c.table, _n(c.added), _n(c.retired), _n(c.current)) for c in result.tables.values()]
    where = f"raw in {result.destination}" if result.destination else "raw"
    console.print(_table(where, TABLE_COLUMNS, tables))
    for s in result.endpoints.values():
        if s.new_fields:
            fields = ", ".join(f"{f} -> column {c}" for f, c in s.new_fields.items())
            console.print(f"[yellow]schema drift[/]: {s.endpoint} has new field(s): {fields}")
        if s.rejected:
            reasons = ", ".join(f"{r} ({n})" for r, n in s.rejected_by_reason.most_common(3))
            where = f"{s.rejected} record(s) in raw._rejected"
            console.print(f"[yellow]rejected[/]: {s.endpoint}: {where}: {reasons}")
        if s.rereads:
            console.print(f"[yellow]re-read[/]: {s.endpoint} was read {s.rereads + 1} times")
    rate = result.records / result.seconds if result.seconds else 0.0
    console.print(
        f"[green]ok[/]: {result.records:,} records ({rate:,.0f}/s), "
        f"{result.items_added:,} listen items added, in {result.seconds:.1f}s"
    )
    console.print(f"load id: {', '.join(sorted(set(result.load_ids.values())))}")

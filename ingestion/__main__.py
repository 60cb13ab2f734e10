"""`python -m ingestion` (make ingest): load the MooVitamix API into schema raw, or into
`--destination filesystem [--bucket-url URL]` (a snapshot appended to the Parquet lake) or
`--destination duckdb`. Without MOOVITAMIX_API_URL (or --api-url) the built-in simulator is
started, and the first line says so. Exit codes: moovitamix.command; 75: another ingestion
holds the lock."""

from __future__ import annotations

import logging
import shlex
import sys
from argparse import SUPPRESS
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from ingestion import IngestionFailed
from ingestion.config import MAX_FIELD_KB_ENV, MAX_RESPONSE_MB_ENV, IngestionConfig
from moovitamix.command import Command, Commands, UsageError
from moovitamix.simulator_process import SimulatorError, api_or_simulator

if TYPE_CHECKING:
    from ingestion.pipeline import IngestionResult

log = logging.getLogger("ingestion")
ENDPOINT_COLUMNS = ("endpoint", "pages", "records", "API total", "rejected", "requests")
TABLE_COLUMNS = ("table", "rows added", "versions retired", "current")


def _ingest(cmd: Command) -> None:
    args, settings = cmd.args, cmd.settings
    if args.bucket_url and args.destination not in (None, "filesystem"):
        raise UsageError("--bucket-url needs --destination filesystem")
    knobs = {
        f.name: getattr(args, f.name) for f in fields(IngestionConfig) if hasattr(args, f.name)
    }
    if args.max_response_mb is not None:
        knobs["max_response_bytes"] = int(args.max_response_mb * 2**20)
    if args.max_field_kb is not None:
        knobs["max_field_bytes"] = int(args.max_field_kb * 2**10)
    try:
        config = IngestionConfig(**knobs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    from ingestion.pipeline import run_ingestion  # here: dlt's import should not slow --help

    lake = args.bucket_url or settings.engine == "spark"
    destination = args.destination or ("filesystem" if lake else "postgres")
    simulator = shlex.split(args.simulator_args)
    with api_or_simulator(settings, cmd.run_id, simulator, args.api_url) as (api_url, sim_log):
        if sim_log:
            unset = "MOOVITAMIX_API_URL is unset"
            log.info("%s: started the built-in simulator at %s (log %s)", unset, api_url, sim_log)
        result = run_ingestion(
            settings,
            cmd.run_id,
            api_url=api_url,
            config=config,
            warehouse=cmd.warehouse,
            destination=destination,
            bucket_url=args.bucket_url,
        )
    print_summary(result)


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
    """The run on one screen (rich): per endpoint, per table, drift and rejects."""
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


def main(argv: Sequence[str] | None = None) -> int:
    commands = Commands(
        "python -m ingestion", __doc__, step_errors=(IngestionFailed, SimulatorError)
    )
    add, knob = commands.add(None, _ingest, run_log=True).add_argument, {"default": SUPPRESS}
    add("--api-url", help="the API (default: MOOVITAMIX_API_URL; unset: the built-in simulator)")
    add("--simulator-args", default="", metavar="ARGS", help="e.g. '--users 5000 --day 1'")
    add("--concurrency", type=int, **knob, help="pages in flight (dlt's workers)")
    add("--max-attempts", type=int, **knob, help="attempts per page")
    add("--backoff", type=float, dest="backoff_base_s", metavar="BACKOFF", **knob,
        help="first retry delay, doubling")  # fmt: skip
    add("--connect-timeout", type=float, dest="connect_timeout_s", **knob, metavar="SECONDS")
    add("--read-timeout", type=float, dest="read_timeout_s", **knob, metavar="SECONDS")
    add("--max-reject-share", type=float, **knob, metavar="SHARE",
        help="share of an endpoint's records that may break the contract")  # fmt: skip
    add("--max-response-mb", type=float, metavar="MB", help=f"default ${MAX_RESPONSE_MB_ENV} or 50")
    add("--max-field-kb", type=float, metavar="KB", help=f"default ${MAX_FIELD_KB_ENV} or 64")
    add("--destination", choices=("postgres", "filesystem", "duckdb"),
        help="postgres: schema raw (scd2); filesystem: a snapshot appended to the Parquet lake; "
        "duckdb: dlt's DuckDB (scd2) (default: filesystem on MOOVITAMIX_ENGINE=spark or with "
        "--bucket-url)")  # fmt: skip
    add("--bucket-url", metavar="URL", help="the lake (default: DESTINATION__FILESYSTEM__"
        "BUCKET_URL, else LAKE_URL, else the data dir's lake)")  # fmt: skip
    add("--no-progress", action="store_false", dest="progress", **knob, help="no progress bars")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""monitoring.ingestion_stats (created here if missing): one row per endpoint per run, what it
read and what it cost; a failed run writes its rows too, with the error."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.types.json import Jsonb

from ingestion.moovitamix_source.contract import ITEMS_TABLE, LISTEN_HISTORY
from moovitamix.warehouse import ensure_tables

if TYPE_CHECKING:
    from ingestion import IngestionFailed
    from ingestion.moovitamix_source import Read
    from ingestion.raw_tables import TableChange

TABLE = "monitoring.ingestion_stats"
DDL = (Path(__file__).parent / "ingestion_stats.sql").read_text(encoding="utf-8")


@dataclass
class EndpointStats:
    """The monitoring row of one endpoint in one run (fields in the table's column order)."""

    run_id: str
    endpoint: str
    status: str = "loaded"
    load_id: str | None = None
    api_total: int | None = None
    pages: int = 0
    records: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    http_errors: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    rereads: int = 0
    new_fields: dict[str, str] = field(default_factory=dict)
    versions_added: int | None = None
    versions_retired: int | None = None
    items_added: int | None = None
    carried_forward: int = 0
    seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None
    suppressed: int = 0  # records of erased users, dropped on purpose (privacy/)

    def row(self) -> tuple[object, ...]:
        return tuple(Jsonb(dict(v)) if isinstance(v, dict) else v for v in vars(self).values())


COLUMNS = tuple(f.name for f in fields(EndpointStats))


def endpoint_stats(
    run_id: str,
    reads: dict[str, list[Read]],
    started_at: datetime,
    failure: IngestionFailed | None = None,
    tables: dict[str, TableChange] | None = None,
    load_id: str | None = None,
) -> dict[str, EndpointStats]:
    """The rows of a run: per endpoint, its reads (the last one kept; costs add up) and what its
    tables changed; on a `failure`, its endpoint (None: all) 'failed', the others 'discarded'."""
    rows, tables = {}, tables or {}
    for name, rs in reads.items():
        last, at_fault = rs[-1], failure is not None and failure.endpoint in (None, name)
        change = tables.get(name)
        items = tables.get(ITEMS_TABLE) if name == LISTEN_HISTORY.name else None
        rows[name] = EndpointStats(
            run_id,
            name,
            status="failed" if at_fault else "discarded" if failure else "loaded",
            error=str(failure) if at_fault else None,
            started_at=started_at,
            load_id=load_id,
            versions_added=change and change.added,
            versions_retired=change and change.retired,
            items_added=items and items.added,
            rereads=len(rs) - 1,
            api_total=last.check.total,
            pages=last.counters.pages,
            records=last.check.received,
            rejected=last.checker.rejected,
            new_fields=dict(last.checker.drift),
            rejected_by_reason=Counter(last.checker.rejected_by_reason),
            carried_forward=last.carried_forward,
            suppressed=last.checker.suppressed,
            requests=sum(read.counters.requests for read in rs),
            bytes=sum(read.counters.bytes for read in rs),
            retries=sum((read.counters.retries for read in rs), Counter()),
            http_errors=sum((read.counters.http_errors for read in rs), Counter()),
            seconds=sum(read.seconds for read in rs),
        )
    return rows


def write_stats(conn: psycopg.Connection, rows: list[EndpointStats]) -> None:
    """Upsert the rows (a run id re-run replaces its rows)."""
    # the schema exists (open_warehouse); the table is created if missing (ensure_tables)
    ensure_tables(conn, [TABLE], DDL)
    _add_suppressed_column(conn)
    names = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("run_id", "endpoint"))
    query = (
        f"insert into {TABLE} ({names}) values ({marks}) "
        f"on conflict (run_id, endpoint) do update set {updates}"
    )
    with conn.cursor() as cursor:
        cursor.executemany(query, [r.row() for r in rows])


def _add_suppressed_column(conn: psycopg.Connection) -> None:
    """A warehouse made before erasure existed gets the `suppressed` column (once)."""
    missing = conn.execute(
        "select not exists (select from information_schema.columns where table_schema = "
        "'monitoring' and table_name = 'ingestion_stats' and column_name = 'suppressed')"
    ).fetchone()
    if missing and missing[0]:
        conn.execute(f"alter table {TABLE} add column if not exists {SUPPRESSED_COLUMN}")


SUPPRESSED_COLUMN = "suppressed bigint not null default 0"

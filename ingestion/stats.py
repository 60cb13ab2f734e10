"""monitoring.ingestion_stats (created here if missing): one row per endpoint per run, what it
read and what it cost; a failed run writes its rows too, with the error."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
import pyarrow as pa
from psycopg.types.json import Jsonb

from ingestion.moovitamix_source.contract import ITEMS_TABLE, LISTEN_HISTORY, TIMESTAMP
from moovitamix.warehouse import ensure_tables

if TYPE_CHECKING:
    from ingestion import IngestionFailed
    from ingestion.moovitamix_source import Read
    from ingestion.raw_tables import TableChange

SCHEMA = "monitoring"
TABLE = "ingestion_stats"

DDL = f"""
create table if not exists {SCHEMA}.{TABLE} (
    run_id text not null,
    endpoint text not null,
    status text not null,             -- loaded | failed (at fault) | discarded (run failed)
    load_id text,                     -- dlt load id of the endpoint's package (null if not loaded)
    api_total bigint,                 -- the API's reported total (first page)
    pages integer not null,           -- pages of the accepted read
    records bigint not null,          -- records received in the accepted read (incl. rejected)
    rejected bigint not null,
    rejected_by_reason jsonb not null,
    requests integer not null,        -- every HTTP request, retries and re-reads included
    retries jsonb not null,           -- by cause: timeout, connection, http_429, http_5xx, ...
    http_errors jsonb not null,       -- by status: {{"503": 2}}
    bytes bigint not null,
    rereads integer not null,         -- reads repeated after a mismatch
    new_fields jsonb not null,        -- schema drift: {{"field": "column"}}
    versions_added bigint,            -- rows this run added to raw.<endpoint>
    versions_retired bigint,          -- versions this run closed (absent from the extract)
    items_added bigint,               -- rows added to raw.listen_history__items
    carried_forward bigint not null,  -- current versions kept for rejected ids
    seconds double precision not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    error text,
    primary key (run_id, endpoint)
)
"""


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

    def row(self) -> tuple[object, ...]:
        return tuple(Jsonb(dict(v)) if isinstance(v, dict) else v for v in vars(self).values())


COLUMNS = tuple(f.name for f in fields(EndpointStats))


def endpoint_stats(
    run_id: str,
    reads: dict[str, list[Read]],
    started_at: datetime,
    status: str = "loaded",
    failure: IngestionFailed | None = None,
    tables: dict[str, TableChange] | None = None,
    load_id: str | None = None,
) -> dict[str, EndpointStats]:
    """The rows of a run: per endpoint, its reads (the last one is the one kept; costs add up)
    and what its tables changed; the endpoint at fault in `failure` (None: all) 'failed'."""
    rows, tables = {}, tables or {}
    for name, rs in reads.items():
        last, at_fault = rs[-1], failure is not None and failure.endpoint in (None, name)
        change = tables.get(name)
        items = tables.get(ITEMS_TABLE) if name == LISTEN_HISTORY.name else None
        s = rows[name] = EndpointStats(
            run_id,
            name,
            status="failed" if at_fault else status,
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
        )
        for read in rs:
            s.requests += read.counters.requests
            s.bytes += read.counters.bytes
            s.retries.update(read.counters.retries)
            s.http_errors.update(read.counters.http_errors)
            s.seconds += read.seconds
    return rows


def write_stats(conn: psycopg.Connection, rows: list[EndpointStats]) -> None:
    """Upsert the rows (a run id re-run replaces its rows)."""
    # the schema exists (open_warehouse); DDL only if the table does not: the loader role
    # may write it but only its owner may re-comment it
    ensure_tables(conn, [f"{SCHEMA}.{TABLE}"], DDL)
    names = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("run_id", "endpoint"))
    query = (
        f"insert into {SCHEMA}.{TABLE} ({names}) values ({marks}) "
        f"on conflict (run_id, endpoint) do update set {updates}"
    )
    with conn.cursor() as cursor:
        cursor.executemany(query, [r.row() for r in rows])


def _arrow_type(annotation: str) -> pa.DataType:
    """The lake's type of a stats field: its counters and dicts as JSON text."""
    arrow = {"int": pa.int64(), "float": pa.float64(), "datetime": TIMESTAMP}
    return arrow.get(annotation.split(" |")[0], pa.string())


STATS_SCHEMA = pa.schema((f.name, _arrow_type(str(f.type))) for f in fields(EndpointStats))


def stats_table(rows: list[EndpointStats]) -> pa.Table:
    """The rows as a table of the lake (its JSON columns as text)."""
    dicts = [
        {
            c: json.dumps(dict(v), sort_keys=True) if isinstance(v, dict) else v
            for c, v in vars(s).items()
        }
        for s in rows
    ]
    return pa.Table.from_pylist(dicts, schema=STATS_SCHEMA)

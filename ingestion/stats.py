"""monitoring.ingestion_stats: one row per endpoint per run, what it read and what it cost.

The table belongs to ingestion (created here if missing). A failed run writes its rows too,
with status 'failed' and the error, whenever the warehouse can still be reached.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import pyarrow as pa
from psycopg.types.json import Jsonb

from ingestion.moovitamix_source.contract import TIMESTAMP
from moovitamix.warehouse import ensure_tables

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

COLUMNS = (
    "run_id",
    "endpoint",
    "status",
    "load_id",
    "api_total",
    "pages",
    "records",
    "rejected",
    "rejected_by_reason",
    "requests",
    "retries",
    "http_errors",
    "bytes",
    "rereads",
    "new_fields",
    "versions_added",
    "versions_retired",
    "items_added",
    "carried_forward",
    "seconds",
    "started_at",
    "finished_at",
    "error",
)


@dataclass
class EndpointStats:
    """The monitoring row of one endpoint in one run."""

    run_id: str
    endpoint: str
    started_at: datetime
    finished_at: datetime
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
    error: str | None = None

    def row(self) -> tuple[object, ...]:
        values = []
        for name in COLUMNS:
            value = getattr(self, name)
            if isinstance(value, dict):  # Counter included
                value = Jsonb(dict(value))
            values.append(value)
        return tuple(values)


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


_TYPES = {
    "api_total": pa.int64(),
    "pages": pa.int32(),
    "records": pa.int64(),
    "rejected": pa.int64(),
    "requests": pa.int32(),
    "bytes": pa.int64(),
    "rereads": pa.int32(),
    "versions_added": pa.int64(),
    "versions_retired": pa.int64(),
    "items_added": pa.int64(),
    "carried_forward": pa.int64(),
    "seconds": pa.float64(),
    "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
}
STATS_SCHEMA = pa.schema([pa.field(c, _TYPES.get(c, pa.string())) for c in COLUMNS])


def stats_table(rows: list[EndpointStats]) -> pa.Table:
    """The rows as a table of the lake (its JSON columns as text)."""
    dicts = [
        {
            c: json.dumps(dict(v), sort_keys=True) if isinstance(v := getattr(s, c), dict) else v
            for c in COLUMNS
        }
        for s in rows
    ]
    return pa.Table.from_pylist(dicts, schema=STATS_SCHEMA)

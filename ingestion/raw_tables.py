"""What ingestion reads back from raw: the listen_history versions whose items are loaded, the
current rows of rejected ids, and what a run changed. Plus the lock that keeps runs apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
import pyarrow as pa
from dlt.common.normalizers.utils import generate_dlt_ids
from psycopg import sql

from ingestion.moovitamix_source.contract import (
    DLT_ID,
    ENDPOINTS,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_TABLE,
    Endpoint,
    record_schema,
)
from ingestion.moovitamix_source.records import KnownHashes

RAW = "raw"
LOCK_KEY = 0x6D76785F696E6765  # pg advisory lock id of ingestion ("mvx_inge")


class IngestionLocked(RuntimeError):
    pass


def try_lock(conn: psycopg.Connection) -> None:
    """Hold the ingestion lock for this session: one ingestion at a time per warehouse."""
    locked = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    if not locked or not locked[0]:
        raise IngestionLocked("another ingestion run holds the lock on this warehouse")


def table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("select to_regclass(%s)", (f"{RAW}.{table}",)).fetchone()
    return bool(row and row[0])


def _chunks(cursor: psycopg.Cursor, size: int = 50_000) -> Iterator[list[str]]:
    while rows := cursor.fetchmany(size):
        yield [row[0] for row in rows]


def known_history_hashes(conn: psycopg.Connection) -> KnownHashes:
    """Hashes of every listen_history version in raw: their items are there already."""
    if not table_exists(conn, LISTEN_HISTORY.table):
        return KnownHashes()
    with conn.transaction(), conn.cursor(name="known_history_hashes") as cursor:
        cursor.execute(
            sql.SQL("select distinct {} from {}").format(
                sql.Identifier(RECORD_HASH), sql.Identifier(RAW, LISTEN_HISTORY.table)
            )
        )
        return KnownHashes.from_chunks(_chunks(cursor))


def active_rows(conn: psycopg.Connection, endpoint: Endpoint, keys: list[int]) -> pa.Table | None:
    """The current versions in raw of these ids, as rows of the endpoint's record table."""
    if not keys or not table_exists(conn, endpoint.table):
        return None
    schema = record_schema(endpoint)
    names = [name for name in schema.names if name != DLT_ID]
    query = sql.SQL("select {} from {} where _dlt_valid_to is null and {} = any(%s)").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.Identifier(RAW, endpoint.table),
        sql.Identifier(endpoint.key),
    )
    rows = conn.execute(query, (keys,)).fetchall()
    if not rows:
        return None
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    columns[DLT_ID] = generate_dlt_ids(len(rows))
    return pa.Table.from_pydict(columns, schema=schema)


@dataclass(frozen=True)
class TableChange:
    table: str
    added: int  # rows of this run's loads (new versions, items, rejects)
    retired: int | None = None  # versions closed by this run (scd2 tables)
    current: int | None = None  # current versions after the run (scd2 tables)


def table_changes(
    conn: psycopg.Connection, load_ids: list[str], boundary: datetime, appended: dict[str, int]
) -> dict[str, TableChange]:
    """Per raw table: what the loads `load_ids` added, and what the run's boundary retired.

    `appended`: rows the loads COPYed into the append-only tables (items, rejects): a COPY
    adds all of its rows or none, and counting them back would scan the whole items table.
    """
    changes: dict[str, TableChange] = {}
    for endpoint in ENDPOINTS.values():
        if not table_exists(conn, endpoint.table):
            continue
        row = conn.execute(
            sql.SQL(
                "select count(*) filter (where _dlt_load_id = any(%s)),"
                " count(*) filter (where _dlt_valid_to = %s),"
                " count(*) filter (where _dlt_valid_to is null) from {}"
            ).format(sql.Identifier(RAW, endpoint.table)),
            (load_ids, boundary),
        ).fetchone()
        assert row is not None
        changes[endpoint.table] = TableChange(endpoint.table, row[0], row[1], row[2])
    for table in (ITEMS_TABLE, REJECTED_TABLE):
        if table_exists(conn, table):
            changes[table] = TableChange(table, appended.get(table, 0))
    return changes

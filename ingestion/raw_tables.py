"""What ingestion reads back from raw: the listen_history versions whose items are loaded, the
current rows of rejected ids, and what a run changed. Plus the lock that keeps runs apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ingestion.moovitamix_source.contract import (
    ENDPOINTS,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_TABLE,
    Endpoint,
    record_schema,
)

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


def known_history_hashes(conn: psycopg.Connection) -> np.ndarray:
    """Hashes of every listen_history version in raw (their items are there already), sorted,
    32 bytes each."""
    if not table_exists(conn, LISTEN_HISTORY.table):
        return np.array([], dtype="S32")
    query = sql.SQL("select distinct {} from {}").format(
        sql.Identifier(RECORD_HASH), sql.Identifier(RAW, LISTEN_HISTORY.table)
    )
    parts = []
    with conn.transaction(), conn.cursor(name="known_history_hashes") as cursor:
        cursor.execute(query)
        while rows := cursor.fetchmany(50_000):
            parts.append(np.array([row[0] for row in rows], dtype="S32"))
    return np.unique(np.concatenate(parts)) if parts else np.array([], dtype="S32")


def carry(conn: psycopg.Connection) -> Callable[[Endpoint, list[int]], dict[str, pa.Table]]:
    """The current versions in raw of rejected ids: they stay current (not a deletion)."""

    def rows(endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        if not table_exists(conn, endpoint.table):
            return {}
        schema = record_schema(endpoint, with_dlt_id=False)
        query = sql.SQL("select {} from {} where _dlt_valid_to is null and {} = any(%s)").format(
            sql.SQL(", ").join(map(sql.Identifier, schema.names)),
            sql.Identifier(RAW, endpoint.table),
            sql.Identifier(endpoint.key),
        )
        found = conn.execute(query, (keys,)).fetchall()
        return (
            {
                endpoint.table: pa.Table.from_pylist(
                    [dict(zip(schema.names, r, strict=True)) for r in found], schema=schema
                )
            }
            if found
            else {}
        )

    return rows


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

"""What ingestion reads back from the destination: the listen_history versions whose items
raw holds, the current rows of rejected ids (a rejected record is not a deleted one: it stays
current), and what a run changed; the lock that keeps runs apart. The lake's current rows are
those of its latest completed snapshot (`_dlt_loads` status 0), carried into the next one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from psycopg import sql

from ingestion.moovitamix_source.contract import (
    ENDPOINTS,
    ITEMS_SCHEMA,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_TABLE,
    Endpoint,
    record_schema,
)

RAW = "raw"
LOCK_KEY = 0x6D76785F696E6765  # pg advisory lock id of ingestion ("mvx_inge")
Carry = Callable[[Endpoint, list[int]], dict[str, pa.Table]]
log = logging.getLogger(__name__)


class IngestionLocked(RuntimeError):
    pass


def try_lock(conn: psycopg.Connection) -> None:
    """Hold the ingestion lock for this session: one ingestion at a time per warehouse."""
    locked = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    if not locked or not locked[0]:
        raise IngestionLocked("another ingestion run holds the lock on this warehouse")


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return bool(conn.execute("select to_regclass(%s)", (f"{RAW}.{table}",)).fetchone()[0])  # type: ignore[index]


def known_history_hashes(conn: psycopg.Connection) -> np.ndarray:
    """Hashes of the listen_history versions in raw (their items are there), sorted, 32 bytes
    each (no Python object per version)."""
    parts = [np.array([], dtype="S32")]
    if _exists(conn, LISTEN_HISTORY.table):
        query = sql.SQL("select distinct {} from {}").format(
            sql.Identifier(RECORD_HASH), sql.Identifier(RAW, LISTEN_HISTORY.table)
        )
        with conn.transaction(), conn.cursor(name="known_history_hashes") as cursor:
            cursor.execute(query)
            while rows := cursor.fetchmany(50_000):
                parts.append(np.array([row[0] for row in rows], dtype="S32"))
    return np.unique(np.concatenate(parts))


def carry(conn: psycopg.Connection) -> Carry:
    """The current versions in raw of rejected ids, for the run to keep them current."""

    def rows(endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        schema = record_schema(endpoint, with_dlt_id=False)
        if not _exists(conn, endpoint.table):
            return {}
        query = sql.SQL("select {} from {} where _dlt_valid_to is null and {} = any(%s)").format(
            sql.SQL(", ").join(map(sql.Identifier, schema.names)),
            sql.Identifier(RAW, endpoint.table),
            sql.Identifier(endpoint.key),
        )
        found = [dict(zip(schema.names, r, strict=True)) for r in conn.execute(query, (keys,))]
        return {endpoint.table: pa.Table.from_pylist(found, schema=schema)} if found else {}

    return rows


def lake_carry(bucket_url: str) -> Carry:
    """The rows (and a history's list items) of rejected ids in the lake's latest completed
    snapshot, for the run to carry them into its own."""
    fs, base = pafs.FileSystem.from_uri(bucket_url)
    root = f"{base.rstrip('/')}/{RAW}"
    loads = pafs.FileSelector(f"{root}/_dlt_loads", allow_not_found=True)
    completed = [str(load["load_id"]) for info in fs.get_file_info(loads)
                 if info.type == pafs.FileType.File
                 for line in fs.open_input_stream(info.path).read().decode().splitlines()
                 if line.strip() and (load := json.loads(line)).get("status") == 0]  # fmt: skip
    latest = max(completed, key=float, default=None)

    def read(table: str, key: str, keys: list[int], schema: pa.Schema) -> pa.Table | None:
        folder = f"{root}/{table}/load_id={latest}"
        if latest is None or fs.get_file_info(folder).type == pafs.FileType.NotFound:
            return None
        dataset = ds.dataset(folder, filesystem=fs, format="parquet")
        return dataset.to_table(columns=schema.names, filter=pc.field(key).isin(keys)).cast(schema)

    def rows(endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        records = read(
            endpoint.table, endpoint.key, keys, record_schema(endpoint, with_dlt_id=False)
        )
        if records is None or not records.num_rows:
            return {}
        log.info("%s: %d rejected record(s) carried from snapshot %s", endpoint.name,
                 records.num_rows, latest)  # fmt: skip
        if endpoint is not LISTEN_HISTORY:
            return {endpoint.table: records}
        items = read(ITEMS_TABLE, "user_id", keys, ITEMS_SCHEMA)
        return {
            endpoint.table: records,
            ITEMS_TABLE: ITEMS_SCHEMA.empty_table() if items is None else items,
        }

    return rows


@dataclass(frozen=True)
class TableChange:
    table: str
    added: int  # rows of this run's loads (new versions, items, rejects)
    retired: int | None = None  # versions closed by this run (scd2 tables)
    current: int | None = None  # current versions after the run (scd2 tables)


def table_changes(
    conn: psycopg.Connection, load_id: str, boundary: datetime, appended: dict[str, int]
) -> dict[str, TableChange]:
    """Per raw table: what the load added and what the run's boundary retired. `appended`: the
    rows of the append-only tables (items, rejects) as the source counted them (counting them
    back would scan the whole items table)."""
    changes: dict[str, TableChange] = {}
    for table in (e.table for e in ENDPOINTS.values() if _exists(conn, e.table)):
        query = sql.SQL("select count(*) filter (where _dlt_load_id = %s), count(*) filter "
                        "(where _dlt_valid_to = %s), count(*) filter (where _dlt_valid_to is "
                        "null) from {}").format(sql.Identifier(RAW, table))  # fmt: skip
        changes[table] = TableChange(table, *conn.execute(query, (load_id, boundary)).fetchone())  # type: ignore[misc]
    for table in (t for t in (ITEMS_TABLE, REJECTED_TABLE) if _exists(conn, t)):
        changes[table] = TableChange(table, appended.get(table, 0))
    return changes

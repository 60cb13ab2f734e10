"""What ingestion reads back from the destination: the listen_history versions whose items
raw holds, the current rows of rejected ids (a rejected record is not a deleted one: it stays
current), and what a run changed; the lock that keeps runs apart. The lake's current rows are
those of its latest completed snapshot (`_dlt_loads` status 0), carried into the next one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dlt
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from ingestion import IngestionAlreadyRunning
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
SqlClient = Any  # the pipeline's `sql_client()`
Carry = Callable[[Endpoint, list[int]], dict[str, pa.Table]]
log = logging.getLogger(__name__)


@contextmanager
def locked(conn: psycopg.Connection) -> Iterator[None]:
    """The ingestion lock, held by this session: one ingestion at a time per warehouse. Released
    explicitly: a closed session's lock lingers until its backend has exited."""
    if not conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
        raise IngestionAlreadyRunning("another ingestion run holds the lock on this warehouse")
    try:
        yield
    finally:
        with suppress(psycopg.Error):
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))


def _exists(client: SqlClient, table: str) -> bool:
    query = "select 1 from information_schema.tables where table_schema = %s and table_name = %s"
    with client.execute_query(query, client.dataset_name, table) as cursor:
        return bool(cursor.fetchall())


def existing(client: SqlClient) -> set[str]:
    """The raw tables the destination has."""
    tables = [*(e.table for e in ENDPOINTS.values()), ITEMS_TABLE, REJECTED_TABLE]
    return {t for t in tables if _exists(client, t)}


def _table(client: SqlClient, table: str) -> str:
    return client.make_qualified_table_name(table)


def known_history_hashes(client: SqlClient) -> np.ndarray:
    """Hashes of the listen_history versions in raw (their items are there), sorted, 32 bytes
    each (no Python object per version kept)."""
    parts = [np.array([], dtype="S32")]
    if _exists(client, LISTEN_HISTORY.table):
        query = f"select distinct {RECORD_HASH} from {_table(client, LISTEN_HISTORY.table)}"
        with client.execute_query(query) as cursor:
            while rows := cursor.fetchmany(50_000):
                parts.append(np.array([row[0] for row in rows], dtype="S32"))
    return np.unique(np.concatenate(parts))


def carry(client: SqlClient) -> Carry:
    """The current versions in raw of rejected ids, for the run to keep them current. `client`
    is opened by the run: dlt's config context cannot be entered from its extract threads."""
    lock = threading.Lock()

    def rows(endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        schema = record_schema(endpoint, with_dlt_id=False)
        with lock:
            if not _exists(client, endpoint.table):
                return {}
            columns = ", ".join(map(client.escape_column_name, schema.names))
            query = (
                f"select {columns} from {_table(client, endpoint.table)} where _dlt_valid_to "
                f"is null and {endpoint.key} in (select unnest(%s))"
            )
            with client.execute_query(query, keys) as cursor:
                found = cursor.arrow()
        return {endpoint.table: found.cast(schema)} if found and found.num_rows else {}

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
        import pyarrow.dataset as ds  # here: it imports pandas (a third of a second)

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
    pipeline: dlt.Pipeline, load_id: str, boundary: datetime, appended: dict[str, int]
) -> dict[str, TableChange]:
    """Per raw table: what the load added and what the run's boundary retired. `appended`: the
    rows of the append-only tables (items, rejects) as the source counted them (counting them
    back would scan the whole items table)."""
    changes: dict[str, TableChange] = {}
    with pipeline.sql_client() as client:
        for table in (e.table for e in ENDPOINTS.values() if _exists(client, e.table)):
            query = ("select count(*) filter (where _dlt_load_id = %s), count(*) filter (where "
                     "_dlt_valid_to = %s), count(*) filter (where _dlt_valid_to is null) from "
                     f"{_table(client, table)}")  # fmt: skip
            with client.execute_query(query, load_id, boundary) as cursor:
                changes[table] = TableChange(table, *cursor.fetchall()[0])
        for table in (t for t in (ITEMS_TABLE, REJECTED_TABLE) if _exists(client, t)):
            changes[table] = TableChange(table, appended.get(table, 0))
    return changes

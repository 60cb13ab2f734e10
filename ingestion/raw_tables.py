"""What ingestion reads back through dlt's `sql_client` (the lake's: DuckDB over its Parquet):
versions raw holds, current rows of rejected ids, what a run changed; and the run's lock."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dlt
import numpy as np
import psycopg
import pyarrow as pa
from dlt.destinations.exceptions import DestinationUndefinedEntity
from psycopg import sql

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

if TYPE_CHECKING:
    from ingestion.moovitamix_source import Read

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


TABLES_QUERY = "select table_name from information_schema.tables where table_schema = %s"


def existing(client: SqlClient) -> set[str]:
    """The tables the destination's raw has."""
    with client.execute_query(TABLES_QUERY, client.dataset_name) as cursor:
        return {row[0] for row in cursor.fetchall()}


def known_history_hashes(client: SqlClient) -> np.ndarray:
    """Hashes of the listen_history versions in raw (their items are there), sorted, 32 bytes
    each: sixteen rows of concatenated hashes (a row per first hex digit), not a row a version
    (a million rows cost the driver's result and Python far more than the hashes)."""
    parts = [np.array([], dtype="S32")]
    if LISTEN_HISTORY.name in existing(client):
        table, column = client.make_qualified_table_name(LISTEN_HISTORY.name), RECORD_HASH
        query = f"select string_agg(distinct {column}, '') from {table} group by left({column}, 1)"
        with client.execute_query(query) as cursor:
            while row := cursor.fetchone():
                parts.append(np.frombuffer(row[0].encode(), dtype="S32"))
    return np.sort(np.concatenate(parts))  # by bytes (the server's order follows its collation)


def carry(client: SqlClient, snapshot: bool) -> Carry:
    """The current rows of rejected ids (scd2's current versions, or the rows and items of the
    lake's latest completed snapshot), read through the run's `client` (README.md)."""
    latest = "select load_id from _dlt_loads where status = 0 order by cast(load_id as double)"
    current = f"_dlt_load_id = ({latest} desc limit 1)" if snapshot else "_dlt_valid_to is null"
    lock = threading.Lock()

    def read(table: str, key: str, keys: list[int], schema: pa.Schema) -> pa.Table | None:
        columns = ", ".join(map(client.escape_column_name, schema.names))
        query = (
            f"select {columns} from {client.make_qualified_table_name(table)} "
            f"where {current} and {key} in (select unnest(%s))"
        )
        try:
            with lock, client.execute_query(query, keys) as cursor:
                found = cursor.arrow()
        except DestinationUndefinedEntity:  # the table or the lake's first snapshot is missing
            return None
        return schema.empty_table() if found is None else found.cast(schema)

    def rows(endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        schema = record_schema(endpoint, with_dlt_id=False)
        records = read(endpoint.name, endpoint.key, keys, schema)
        if records is None or not records.num_rows:
            return {}
        log.info("%s: %d rejected record(s) carried forward", endpoint.name, records.num_rows)
        if not snapshot or endpoint is not LISTEN_HISTORY:
            return {endpoint.name: records}
        items = read(ITEMS_TABLE, "user_id", keys, ITEMS_SCHEMA)
        return {endpoint.name: records, ITEMS_TABLE: items or ITEMS_SCHEMA.empty_table()}

    return rows


@dataclass(frozen=True)
class TableChange:
    table: str
    added: int  # rows of this run's loads (new versions, items, rejects)
    retired: int | None = None  # versions closed by this run (scd2 tables)
    current: int | None = None  # current versions after the run (scd2 tables)


def appended(reads: Iterable[Read]) -> dict[str, TableChange]:
    """Per table, the rows the source handed dlt in these reads."""
    rows: Counter[str] = sum((Counter(read.rows) for read in reads), Counter())
    return {table: TableChange(table, n) for table, n in rows.items()}


def table_changes(
    pipeline: dlt.Pipeline, load_id: str, boundary: datetime, source: dict[str, TableChange]
) -> dict[str, TableChange]:
    """Per raw table: what the load added and what the run's boundary retired. The append-only
    tables (items, rejects) keep the `source`'s counts (`appended()`: counting them back would
    scan the whole items table)."""
    changes: dict[str, TableChange] = {}
    with pipeline.sql_client() as client:
        tables = existing(client)
        for table in (e for e in ENDPOINTS if e in tables):
            query = (
                "select count(*) filter (where _dlt_load_id = %s),"
                " count(*) filter (where _dlt_valid_to = %s),"
                " count(*) filter (where _dlt_valid_to is null)"
                f" from {client.make_qualified_table_name(table)}"
            )
            with client.execute_query(query, load_id, boundary) as cursor:
                changes[table] = TableChange(table, *cursor.fetchall()[0])
        for table in (t for t in (ITEMS_TABLE, REJECTED_TABLE) if t in tables):
            changes[table] = source.get(table) or TableChange(table, 0)
    return changes


# Indexes for the incremental transform's predicates (dbt_project/macros/delete_stale_listens.sql):
# the items of the users to rebuild and of the tracks that appeared or were deleted, and the
# history versions that started or ended after a watermark. Created by ingestion because the
# loader owns raw (dbt's role may not, and dlt has no index hints for Postgres).
RAW_INDEXES = {
    f"{ITEMS_TABLE}_user_id_idx": (ITEMS_TABLE, "user_id"),
    f"{ITEMS_TABLE}_track_id_idx": (ITEMS_TABLE, "track_id"),
    f"{LISTEN_HISTORY.name}_valid_from_idx": (LISTEN_HISTORY.name, "_dlt_valid_from"),
    f"{LISTEN_HISTORY.name}_valid_to_idx": (LISTEN_HISTORY.name, "_dlt_valid_to"),
}


def ensure_indexes(conn: psycopg.Connection, schema: str = RAW) -> list[str]:
    """Create the missing RAW_INDEXES of the tables raw has (after a load: dlt creates the tables
    on the first). Returns the indexes created; an index built once is kept up by Postgres."""
    present = {
        row[0]
        for row in conn.execute(
            "select indexname from pg_indexes where schemaname = %s", (schema,)
        ).fetchall()
    }
    tables = {row[0] for row in conn.execute(TABLES_QUERY, (schema,)).fetchall()}
    created = []
    for name, (table, column) in RAW_INDEXES.items():
        if name in present or table not in tables:
            continue
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({})").format(
                sql.Identifier(name),
                sql.Identifier(schema, table),
                sql.Identifier(column),
            )
        )
        created.append(name)
    if created:
        log.info("created indexes on %s: %s", schema, ", ".join(created))
    return created

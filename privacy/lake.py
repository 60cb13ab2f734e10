"""The Spark engine's Parquet (README.md, "Forgetting a user"): the lake's snapshots, its copies
of the lists, and the local Spark warehouse's tables (the history's change logs, the marts'
slots) keep an erased user in immutable files. Each file that holds them is read, filtered and
written anew beside it, then renamed over the old one (atomic on a local disk; on object
stores a copy then a delete). Cost: every file of a user-holding table that has the user, in
every snapshot kept: about the size of those tables times the snapshots kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from privacy.subjects import EMAIL, subject_hash

log = logging.getLogger(__name__)

USER_ENDPOINTS = ("users", "listen_history")


def parquet_files(url: str) -> Iterator[tuple[fs.FileSystem, str]]:
    """Every Parquet file under `url` (a path, `file://`, `s3://`, ...), hidden ones left out."""
    filesystem, root = fs.FileSystem.from_uri(url if "://" in url else f"file://{url}")
    selector = fs.FileSelector(root, recursive=True, allow_not_found=True)
    for info in filesystem.get_file_info(selector):
        name = info.base_name
        if info.type == fs.FileType.File and name.endswith(".parquet") and name[0] not in "._":
            yield filesystem, info.path


def _is_users_table(path: str) -> bool:
    parts = [p for p in path.split("/") if p and "=" not in p]
    table = parts[-2] if len(parts) > 1 else ""
    return "users" in table and "tracks" not in table


def _equal(column: pa.ChunkedArray, value: object, type_: pa.DataType) -> pa.Array:
    """column == value, null as False (a column may be all null: Arrow's null type)."""
    try:
        values = pc.cast(column, type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. text ids: none is the user
        return pa.array([False] * len(column), pa.bool_())
    return pc.fill_null(pc.equal(values, pa.scalar(value, type_)), False)


def _mask(table: pa.Table, path: str, user_id: int, salt: bytes, emails: set[str]) -> pa.Array:
    """Rows that are the user's: their `user_id`, their `id` in a users table, a quarantined
    record of theirs (by key, or an e-mail on the suppression list)."""
    names = table.column_names
    mask = pa.array([False] * table.num_rows, pa.bool_())
    if "user_id" in names:
        mask = pc.or_(mask, _equal(table["user_id"], user_id, pa.int64()))
    if "id" in names and _is_users_table(path):
        mask = pc.or_(mask, _equal(table["id"], user_id, pa.int64()))
    if {"endpoint", "record_key", "payload"} <= set(names):
        endpoint = pc.cast(table["endpoint"], pa.string())
        keyed = pc.and_(
            pc.fill_null(pc.is_in(endpoint, pa.array(USER_ENDPOINTS)), False),
            _equal(table["record_key"], str(user_id), pa.string()),
        )
        by_email = [_payload_email_hash(p, salt) in emails for p in table["payload"].to_pylist()]
        mask = pc.or_(pc.or_(mask, keyed), pa.array(by_email, pa.bool_()))
    return mask


def _payload_email_hash(payload: str | None, salt: bytes) -> str | None:
    try:
        record = json.loads(payload or "")
    except ValueError:
        return None
    email = record.get("email") if isinstance(record, dict) else None
    return subject_hash(salt, EMAIL, email) if isinstance(email, str) else None


def forget_in_parquet(url: str, user_id: int, salt: bytes, emails: set[str]) -> int:
    """Rewrite every Parquet file under `url` that holds the user; returns the rows removed."""
    removed = 0
    for filesystem, path in parquet_files(url):
        with filesystem.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            table = parquet.read()
            schema = parquet.schema
            int96 = any(schema.column(i).physical_type == "INT96" for i in range(len(schema)))
        if not table.num_rows:  # an empty snapshot's table
            continue
        mask = _mask(table, path, user_id, salt, emails)
        if not (count := pc.sum(mask).as_py() or 0):
            continue
        kept = table.filter(pc.invert(mask))
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}.erasing"
        with filesystem.open_output_stream(tmp) as sink:
            # timestamps as the writer stored them: Spark's INT96, else microseconds (Spark reads
            # no nanoseconds, which Arrow would write for INT96's values)
            pq.write_table(
                kept,
                sink,
                compression="snappy",
                use_deprecated_int96_timestamps=int96,
                coerce_timestamps=None if int96 else "us",
                allow_truncated_timestamps=True,
            )
        filesystem.move(tmp, path)
        # Hadoop's local file system (Spark's tables) keeps a checksum beside each file: the old
        # one would fail the new file's reads; without one, Hadoop reads it unchecked
        checksum = f"{directory}/.{name}.crc"
        if filesystem.get_file_info(checksum).type == fs.FileType.File:
            filesystem.delete_file(checksum)
        removed += count
    if removed:
        log.info("rewrote the Parquet under %s: %d rows of an erased user removed", url, removed)
    return removed

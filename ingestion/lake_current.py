"""What the lake holds now: the rows of its latest completed snapshot, read for the records a
run rejects.

A rejected record is not a deleted one. The Postgres run keeps its current version current; in
the lake, where every run writes a complete snapshot, the run carries the record's last good
row (and, for a listen history, its list items) from the latest completed snapshot into its
own, so downstream sees the record unchanged rather than gone for a day. A load is complete
when dlt's `_dlt_loads` has it with status 0 (one JSON document per load).
"""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ingestion.moovitamix_source.contract import (
    ITEMS_SCHEMA,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    Endpoint,
    record_schema,
)
from ingestion.raw_tables import RAW

log = logging.getLogger(__name__)

LOADS_TABLE = "_dlt_loads"


class LakeCurrent:
    """The latest completed snapshot of the lake at `bucket_url` (none in an empty lake)."""

    def __init__(self, bucket_url: str) -> None:
        self.fs, base = pafs.FileSystem.from_uri(bucket_url)
        self.root = f"{base.rstrip('/')}/{RAW}"
        self.load_id = self._latest_completed_load()

    def _latest_completed_load(self) -> str | None:
        selector = pafs.FileSelector(f"{self.root}/{LOADS_TABLE}", allow_not_found=True)
        completed: list[str] = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            with self.fs.open_input_stream(info.path) as stream:
                text = stream.read().decode("utf-8")
            for line in text.splitlines():
                if line.strip():
                    load = json.loads(line)
                    if load.get("status") == 0:
                        completed.append(str(load["load_id"]))
        return max(completed, key=float, default=None)

    def _read(self, table: str, key: str, keys: list[int], columns: list[str]) -> pa.Table | None:
        folder = f"{self.root}/{table}/load_id={self.load_id}"
        if not keys or self.load_id is None:
            return None
        if self.fs.get_file_info(folder).type == pafs.FileType.NotFound:
            return None
        dataset = ds.dataset(folder, filesystem=self.fs, format="parquet")
        present = [c for c in columns if c in dataset.schema.names]
        rows = dataset.to_table(columns=present, filter=pc.field(key).isin(keys))
        return rows if rows.num_rows else None

    def carry(self, endpoint: Endpoint, keys: list[int]) -> dict[str, pa.Table]:
        """The snapshot's rows of these ids (and a history's list items) for the next one."""
        schema = record_schema(endpoint, with_dlt_id=False)
        rows = self._read(endpoint.table, endpoint.key, keys, schema.names)
        if rows is None:
            return {}
        log.info(
            "%s: %d rejected record(s) carried from snapshot %s",
            endpoint.name,
            rows.num_rows,
            self.load_id,
        )
        out = {endpoint.table: rows.cast(schema)}
        if endpoint is LISTEN_HISTORY:
            items = self._read(ITEMS_TABLE, "user_id", keys, ITEMS_SCHEMA.names)
            out[ITEMS_TABLE] = (
                ITEMS_SCHEMA.empty_table() if items is None else items.cast(ITEMS_SCHEMA)
            )
        return out

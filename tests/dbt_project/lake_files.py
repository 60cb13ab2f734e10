"""A hand-written Parquet lake in the layout of the lake contract (what the lake writer of
`ingestion/` produces): `<lake>/raw/<table>/load_id=<id>/<file>.parquet` for every raw table,
every row with `_dlt_load_id` and `_snapshot_at`, and dlt's `_dlt_loads` register (one JSON
document per completed load). Columns and types are the ingestion's contract."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.moovitamix_source.contract import (
    ENDPOINTS,
    ITEMS_SCHEMA,
    ITEMS_TABLE,
    REJECTED_SCHEMA,
    REJECTED_TABLE,
    TIMESTAMP,
    record_schema,
)

LOAD_ID = "_dlt_load_id"
SNAPSHOT_AT = "_snapshot_at"


def _with_snapshot_columns(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(LOAD_ID, pa.string(), nullable=False)).append(
        pa.field(SNAPSHOT_AT, TIMESTAMP, nullable=False)
    )


@dataclass
class Snapshot:
    """One load: the complete extract of every endpoint at `at` (rows as dicts of the record
    tables' columns; listen histories with their `items`)."""

    load_id: str
    at: datetime
    tracks: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    listen_history: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = True


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:32]


def write_snapshot(lake: Path, snapshot: Snapshot) -> None:
    """Append one load's files; a completed load also gets its `_dlt_loads` document."""
    tables: dict[str, tuple[pa.Schema, list[dict[str, Any]]]] = {
        REJECTED_TABLE: (REJECTED_SCHEMA, []),
        ITEMS_TABLE: (ITEMS_SCHEMA, []),
    }
    for name, endpoint in ENDPOINTS.items():
        schema = record_schema(endpoint)
        rows = []
        for record in getattr(snapshot, name):
            row = {c: record.get(c) for c in schema.names}
            if name == "listen_history":
                row["item_count"] = len(record["items"])
            row["record_hash"] = record.get("record_hash") or record_hash(record)
            row["_dlt_id"] = record_hash({"id": row["record_hash"], "load": snapshot.load_id})
            rows.append(row)
            if name == "listen_history":
                tables[ITEMS_TABLE][1].extend(
                    {
                        "record_hash": row["record_hash"],
                        "user_id": record["user_id"],
                        "position": position,
                        "track_id": track_id,
                    }
                    for position, track_id in enumerate(record["items"])
                )
        tables[name] = (schema, rows)
    for name, (schema, rows) in tables.items():
        full = _with_snapshot_columns(schema)
        for row in rows:
            row[LOAD_ID] = snapshot.load_id
            row[SNAPSHOT_AT] = snapshot.at
        folder = lake / "raw" / name / f"load_id={snapshot.load_id}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=full), folder / "0.parquet")
    if snapshot.completed:
        loads = lake / "raw" / "_dlt_loads"
        loads.mkdir(parents=True, exist_ok=True)
        (loads / f"moovitamix__{snapshot.load_id}.jsonl").write_text(
            json.dumps(
                {
                    "load_id": snapshot.load_id,
                    "schema_name": "moovitamix",
                    "status": 0,
                    "inserted_at": snapshot.at.isoformat(),
                    "schema_version_hash": "test",
                }
            )
        )

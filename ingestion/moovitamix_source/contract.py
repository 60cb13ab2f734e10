"""The source contract (shared/moovitamix-api.md) as code: each endpoint's fields and the raw
tables they land in, with the column types that dbt relies on.

The Arrow schemas below are the single definition of those tables: the record builders fill
them, and the dlt column hints (protected by a schema contract) are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa
from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns
from dlt.common.schema.typing import TTableSchemaColumns

PAGE_SIZE = 100  # the contract's maximum page size
RECORD_HASH = "record_hash"  # content hash of a record version: the scd2 row version column
DLT_ID = "_dlt_id"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # the API's naive timestamps are UTC


class Kind(Enum):
    INT = "integer"
    TEXT = "string"
    TIMESTAMP = "timestamp"
    INT_LIST = "list of integers"


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Endpoint:
    """One API endpoint: its path, its record fields, and the raw table of its records."""

    name: str  # the path without "/", the dlt resource name and the raw table name
    key: str  # the field that identifies a record (unique per extract)
    fields: tuple[Field, ...]

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def table(self) -> str:
        return self.name

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)


def _fields(**kinds: Kind) -> tuple[Field, ...]:
    return tuple(Field(name, kind) for name, kind in kinds.items())


TRACKS = Endpoint(
    "tracks",
    key="id",
    fields=_fields(
        id=Kind.INT,
        name=Kind.TEXT,
        artist=Kind.TEXT,
        songwriters=Kind.TEXT,
        duration=Kind.TEXT,
        genres=Kind.TEXT,
        album=Kind.TEXT,
        created_at=Kind.TIMESTAMP,
        updated_at=Kind.TIMESTAMP,
    ),
)
USERS = Endpoint(
    "users",
    key="id",
    fields=_fields(
        id=Kind.INT,
        first_name=Kind.TEXT,
        last_name=Kind.TEXT,
        email=Kind.TEXT,
        gender=Kind.TEXT,
        favorite_genres=Kind.TEXT,
        created_at=Kind.TIMESTAMP,
        updated_at=Kind.TIMESTAMP,
    ),
)
LISTEN_HISTORY = Endpoint(
    "listen_history",
    key="user_id",
    fields=_fields(
        user_id=Kind.INT,
        items=Kind.INT_LIST,
        created_at=Kind.TIMESTAMP,
        updated_at=Kind.TIMESTAMP,
    ),
)
ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (TRACKS, USERS, LISTEN_HISTORY)}

ITEMS_TABLE = "listen_history__items"
REJECTED_TABLE = "_rejected"

_ARROW_TYPES = {Kind.INT: pa.int64(), Kind.TEXT: pa.string(), Kind.TIMESTAMP: TIMESTAMP}


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def record_schema(endpoint: Endpoint) -> pa.Schema:
    """The record table of an endpoint: its scalar fields as served, typed, plus the hash.

    listen_history keeps `item_count` in place of `items` (the items get their own table).
    """
    columns = [
        _required(f.name, _ARROW_TYPES[f.kind]) for f in endpoint.fields if f.kind != Kind.INT_LIST
    ]
    if endpoint is LISTEN_HISTORY:
        columns.insert(1, _required("item_count", pa.int32()))
    return pa.schema(
        [*columns, _required(RECORD_HASH, pa.string()), _required(DLT_ID, pa.string())]
    )


ITEMS_SCHEMA = pa.schema(
    [
        _required(RECORD_HASH, pa.string()),  # of the listen_history version holding the items
        _required("user_id", pa.int64()),
        _required("position", pa.int32()),  # 0-based, the order the API served
        _required("track_id", pa.int64()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        _required("endpoint", pa.string()),
        _required("page", pa.int32()),
        pa.field("record_key", pa.string()),  # the record's id/user_id when one was readable
        _required("payload", pa.string()),  # the record as served, JSON text
        _required("reason", pa.string()),
        _required("run_id", pa.string()),
        _required("rejected_at", TIMESTAMP),
    ]
)

# Names a new API field may not take: they are ours (or dlt's).
RESERVED_COLUMNS = frozenset({RECORD_HASH, DLT_ID, "item_count"})


def column_hints(schema: pa.Schema) -> TTableSchemaColumns:
    """dlt column hints equal to what dlt infers from `schema`, so the contract holds."""
    columns = py_arrow_to_table_schema_columns(schema)
    if DLT_ID in columns:
        columns[DLT_ID].update({"unique": True, "row_key": True})
    return columns

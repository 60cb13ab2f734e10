"""The source contract (shared/moovitamix-api.md) as code, declared once per endpoint: the
fields and their kinds give the Pydantic type that checks a record, the Arrow schema of the raw
table it lands in, and the dlt column hints (under a schema contract) of that table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import pyarrow as pa
from pydantic import AfterValidator, BeforeValidator, Field, Strict
from typing_extensions import TypedDict

RECORD_HASH = "record_hash"  # content hash of a record version: the scd2 row version column
DLT_ID = "_dlt_id"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # the API's naive timestamps are UTC
ITEMS_TABLE = "listen_history__items"
REJECTED_TABLE = "_rejected"
INT64 = 2**63


class Kind(Enum):
    INT = "integer"
    TEXT = "string"
    TIMESTAMP = "timestamp"
    INT_LIST = "list of integers"


@dataclass(frozen=True)
class Endpoint:
    """One API endpoint: its path (= resource and raw table name), key and fields."""

    name: str
    key: str  # identifies a record (unique per extract)
    fields: dict[str, Kind]

    @property
    def table(self) -> str:
        return self.name


_T, _S, _I = Kind.TIMESTAMP, Kind.TEXT, Kind.INT
TRACKS = Endpoint(
    "tracks",
    "id",
    dict(
        id=_I,
        name=_S,
        artist=_S,
        songwriters=_S,
        duration=_S,
        genres=_S,
        album=_S,
        created_at=_T,
        updated_at=_T,
    ),
)
USERS = Endpoint(
    "users",
    "id",
    dict(
        id=_I,
        first_name=_S,
        last_name=_S,
        email=_S,
        gender=_S,
        favorite_genres=_S,
        created_at=_T,
        updated_at=_T,
    ),
)
LISTEN_HISTORY = Endpoint(
    "listen_history", "user_id", dict(user_id=_I, items=Kind.INT_LIST, created_at=_T, updated_at=_T)
)
ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (TRACKS, USERS, LISTEN_HISTORY)}
RESERVED_COLUMNS = frozenset({RECORD_HASH, DLT_ID, "item_count"})  # a new field may not take


# ---- Pydantic: the checks ------------------------------------------------------------------


def _timestamp(value: Any) -> datetime:
    """ISO 8601 text -> an aware UTC datetime (naive text is UTC; an offset is converted)."""
    if type(value) is not str:  # pydantic would take a number as a unix time
        raise ValueError(f"not a timestamp but {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("unparsable timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def text_problem(value: str, max_bytes: int) -> str | None:
    """Why a string cannot be stored as it is (None: it can); never quotes the value."""
    if "\x00" in value:
        return "holds a NUL character (Postgres text cannot store it)"
    if len(value) * 4 <= max_bytes and value.isascii():
        return None
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    return f"over the {max_bytes}-byte field cap ({size} bytes)" if size > max_bytes else None


def _storable(max_bytes: int) -> AfterValidator:
    def check(value: str) -> str:
        if problem := text_problem(value, max_bytes):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


Int = Annotated[int, Strict(), Field(ge=-INT64, lt=INT64)]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


def record_type(endpoint: Endpoint, max_field_bytes: int | None = None) -> Any:
    """A record of `endpoint` as a Pydantic-checked TypedDict. With `max_field_bytes` every
    string is also checked for what Postgres cannot store (on pages whose body may hold such)."""
    text: Any = Annotated[str, Strict()]
    if max_field_bytes is not None:
        text = Annotated[str, Strict(), _storable(max_field_bytes)]
    kinds = {Kind.INT: Int, Kind.TEXT: text, Kind.TIMESTAMP: Timestamp, Kind.INT_LIST: list[Int]}
    fields = {name: kinds[kind] for name, kind in endpoint.fields.items()}
    return TypedDict(endpoint.name, fields)  # type: ignore[operator]


# ---- Arrow: the raw tables -----------------------------------------------------------------

_ARROW = {Kind.INT: pa.int64(), Kind.TEXT: pa.string(), Kind.TIMESTAMP: TIMESTAMP}


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def record_schema(endpoint: Endpoint, *, with_dlt_id: bool = True) -> pa.Schema:
    """The raw table of an endpoint's records: its scalar fields, typed, the hash and (added
    by dlt's normalizer) `_dlt_id`; listen_history has `item_count` in place of `items`."""
    columns = [_required(n, _ARROW[k]) for n, k in endpoint.fields.items() if k in _ARROW]
    if endpoint is LISTEN_HISTORY:
        columns.insert(1, _required("item_count", pa.int32()))
    columns.append(_required(RECORD_HASH, pa.string()))
    return pa.schema([*columns, _required(DLT_ID, pa.string())] if with_dlt_id else columns)


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

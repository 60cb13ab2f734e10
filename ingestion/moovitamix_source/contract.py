"""The source contract, once per endpoint: the Pydantic type of a record and the Arrow schema of
its raw table; a page -> records, items and rejects (README.md, "Untrusted input")."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Annotated, Any

import dlt
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, BeforeValidator, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from privacy.subjects import Suppression

RECORD_HASH = "record_hash"  # content hash of a record version: the scd2 row version column
DLT_ID = "_dlt_id"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # the API's naive timestamps are UTC
ITEMS_TABLE = "listen_history__items"
REJECTED_TABLE = "_rejected"
MAX_NAME_CHARS = 256  # of a new field's name
MAX_PAYLOAD_BYTES = 2**20  # of a rejected record's stored payload, after cutting its fields


class Kind(Enum):
    INT = "integer"
    TEXT = "string"
    TIMESTAMP = "timestamp"
    INT_LIST = "list of integers"


@dataclass(frozen=True)
class Endpoint:
    name: str  # the path, the resource and the raw table
    key: str  # identifies a record (unique per extract)
    fields: dict[str, Kind]


_T, _S, _I = Kind.TIMESTAMP, Kind.TEXT, Kind.INT
TRACKS = Endpoint("tracks", "id", dict(id=_I, name=_S, artist=_S, songwriters=_S,
                  duration=_S, genres=_S, album=_S, created_at=_T, updated_at=_T))  # fmt: skip
USERS = Endpoint("users", "id", dict(id=_I, first_name=_S, last_name=_S, email=_S, gender=_S,
                                     favorite_genres=_S, created_at=_T, updated_at=_T))  # fmt: skip
LISTEN_HISTORY = Endpoint(
    "listen_history", "user_id", dict(user_id=_I, items=Kind.INT_LIST, created_at=_T, updated_at=_T)
)
ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (TRACKS, USERS, LISTEN_HISTORY)}
USER_KEYS = {USERS.name: "id", LISTEN_HISTORY.name: "user_id"}  # whose a record is (erasure)


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


def _storable(value: str, max_bytes: int) -> str:
    if problem := text_problem(value, max_bytes):
        raise ValueError(problem)
    return value


def record_type(endpoint: Endpoint, max_field_bytes: int | None = None) -> Any:
    """A record of `endpoint` as a TypedDict Pydantic checks strictly; with `max_field_bytes`
    its strings are checked for what Postgres cannot store (on pages whose body may hold such)
    and its timestamps parsed, else they stay text (`_iso_column` reads a page's at once)."""
    storable = AfterValidator(partial(_storable, max_bytes=max_field_bytes))
    text: Any = Annotated[str, Strict(), *([storable] if max_field_bytes else [])]
    integer = Annotated[int, Strict(), Field(ge=-(2**63), lt=2**63)]
    stamp = Annotated[datetime, BeforeValidator(_timestamp)] if max_field_bytes else text
    kinds = {_I: integer, _S: text, _T: stamp, Kind.INT_LIST: list[integer]}
    return TypedDict(endpoint.name, {n: kinds[k] for n, k in endpoint.fields.items()})  # type: ignore[operator]


_ISO = re.compile(
    r"(?:(?!0000)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?\n)*"
    r"(?!0000)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?",
    re.ASCII,
)  # the naive ISO text Arrow and Python read alike (Python has no year 0)


def _iso_column(values: list[str]) -> pa.Array:
    """Naive ISO timestamps -> a UTC column: one regex and one Arrow cast (which refuses dates
    that do not exist) for a page's values instead of a Python validator per value; ValueError
    if one is in another form (the page then goes record by record)."""
    if values and not _ISO.fullmatch("\n".join(values)):
        raise ValueError("a timestamp in another form")
    try:
        return pc.cast(pa.array(values, pa.string()), pa.timestamp("us")).view(TIMESTAMP)
    except pa.ArrowInvalid:
        raise ValueError("not a real date") from None


def _column(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def record_schema(endpoint: Endpoint, *, with_dlt_id: bool = True) -> pa.Schema:
    """The raw table of an endpoint: its scalar fields, typed, the hash and `_dlt_id`;
    listen_history has `item_count` in place of `items`."""
    arrow = {_I: pa.int64(), _S: pa.string(), _T: TIMESTAMP, Kind.INT_LIST: pa.int32()}
    columns = [_column("item_count" if k is Kind.INT_LIST else n, arrow[k])
               for n, k in endpoint.fields.items()]  # fmt: skip
    columns.append(_column(RECORD_HASH, pa.string()))
    return pa.schema([*columns, _column(DLT_ID, pa.string())] if with_dlt_id else columns)


ITEMS_SCHEMA = pa.schema(
    [
        _column(RECORD_HASH, pa.string()),  # of the listen_history version holding the items
        _column("user_id", pa.int64()),
        _column("position", pa.int32()),  # 0-based, the order the API served
        _column("track_id", pa.int64()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [_column("endpoint", pa.string()), _column("page", pa.int32()),
     _column("record_key", pa.string(), True),  # the id, when one was readable
     _column("payload", pa.string()),  # the record as served, JSON text
     _column("reason", pa.string()), _column("run_id", pa.string()),
     _column("rejected_at", TIMESTAMP)]
)  # fmt: skip


def to_json(value: Any) -> str:
    """JSON text (orjson; the stdlib for what orjson refuses: huge ints, lone surrogates)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def record_hash(record: Any) -> str:
    """Content hash of a record as served (every field, new ones included; key order ignored)."""
    try:
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def known(hashes: np.ndarray, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which values of `column` are in the sorted `hashes` (32-byte strings: no objects)."""
    keys = column.to_numpy(zero_copy_only=False).astype("S32")
    at = np.minimum(np.searchsorted(hashes, keys), len(hashes) - 1)
    return hashes[at] == keys


_REASONS: dict[str | tuple[str, ...], str] = {  # Pydantic's error types (by prefix) in words
    "missing": "missing",
    "int": "not an integer",
    "string_type": "not a string",
    "string_unicode": "not valid Unicode (a lone surrogate)",
    "list": "not a list",
    ("greater", "less"): "out of the 64-bit range",
    ("dict", "model"): "not an object",
}


def _reason(error: Any) -> str:
    """`field: what is wrong` from a Pydantic error; never the text of a value."""
    where = "".join(f"[{p}]" if type(p) is int else p for p in error["loc"]) or "record"
    kind, what = error["type"], error["msg"].removeprefix("Value error, ")
    what = next((text for prefix, text in _REASONS.items() if kind.startswith(prefix)), what)
    return f"{where}: {'null' if error['input'] is None and what != 'missing' else what}"


def _cut(value: Any, max_bytes: int) -> Any:
    """The value with its strings over the cap replaced by a note of their size."""
    if type(value) is str and (size := len(value.encode(errors="surrogatepass"))) > max_bytes:
        return f"<cut: {size} bytes, over the field cap>"
    if type(value) is list:
        return [_cut(v, max_bytes) for v in value]
    if type(value) is dict:
        return {_cut(k, max_bytes): _cut(v, max_bytes) for k, v in value.items()}
    return value


def extra_field_problem(name: str, value: Any, max_bytes: int) -> str | None:
    """Why a field the contract does not know cannot be kept (None: it can)."""
    if len(name) > MAX_NAME_CHARS:
        return f"a new field's name: too long ({len(name)} > {MAX_NAME_CHARS} characters)"
    label, text = f"new field {to_json(name)[:40]}", json.dumps([name, value], ensure_ascii=False)
    if "\\u0000" in text:
        return f"{label}: holds a NUL character (Postgres text cannot store it)"
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return f"{label}: not valid Unicode (a lone surrogate)"
    if size > max_bytes:
        return f"{label}: over the {max_bytes}-byte field cap ({size} bytes of JSON)"
    return None


@dataclass
class Tables:
    """Pages as rows for dlt: records tables (with drift columns), items tables, rejects."""

    records: list[pa.Table] = field(default_factory=list)
    items: list[pa.Table] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    batch: bool = False  # checked pages wait in `pending` for Checker.flush (one table)
    pending: list[tuple[list, list, dict[str, pa.Array]]] = field(default_factory=list)

    def rejected_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rejected, schema=REJECTED_SCHEMA)


class Checker:
    """Checks one endpoint's pages against its contract (from the fetching threads)."""

    def __init__(
        self,
        endpoint: Endpoint,
        run_id: str,
        max_field_bytes: int,
        known_hashes: np.ndarray | None = None,
        suppression: Suppression | None = None,
    ) -> None:
        self.endpoint, self.run_id, self.max_field_bytes = endpoint, run_id, max_field_bytes
        self.suppression = suppression  # erased users: dropped before anything is kept
        self.suppressed = 0
        self.known_hashes = known_hashes  # sorted S32 hashes of versions whose items raw holds
        self.page_type = TypeAdapter(list[record_type(endpoint)])  # type: ignore[misc]
        self.careful_type = TypeAdapter(record_type(endpoint, max_field_bytes))
        self.stamps = [n for n, k in endpoint.fields.items() if k is _T]
        self.schema = record_schema(endpoint, with_dlt_id=False)
        self.drift: dict[str, str] = {}  # new field -> its column (JSON text)
        self.rejected_by_reason: Counter[str] = Counter()
        self.rejected_keys: list[int] = []  # ids of rejected records that had a readable id
        self.rejected = 0
        self._lock = threading.Lock()

    def page(self, number: int, records: list[Any], careful: bool, out: Tables) -> list[Any]:
        """Check one page into `out`; returns the key of each record (None: unreadable)."""
        key = self.endpoint.key
        keys = [r.get(key) if type(r) is dict and type(r.get(key)) is int else None
                for r in records]  # fmt: skip
        if self.suppression and self.endpoint.name in USER_KEYS:
            records = self._unsuppressed(records)
        good: list[dict[str, Any]] = []
        served: list[dict[str, Any]] = []
        try:  # the whole page at once; record by record if one breaks the contract
            if careful:
                raise ValueError("check each record")
            good, served = self.page_type.validate_python(records), records
            stamps = {n: _iso_column([r[n] for r in good]) for n in self.stamps}
        except (ValidationError, ValueError):
            good, served, stamps = [], [], {}
            for record in records:
                try:
                    good.append(self.careful_type.validate_python(record))
                    served.append(record)
                except ValidationError as exc:
                    self._reject(number, record, [_reason(e) for e in exc.errors()], out)
        keep = np.ones(len(served), bool)
        for i in reversed([i for i, r in enumerate(served) if len(r) > len(self.endpoint.fields)]):
            new, cap = served[i].keys() - self.endpoint.fields.keys(), self.max_field_bytes
            if problems := [p for f in new if (p := extra_field_problem(f, served[i][f], cap))]:
                self._reject(number, served.pop(i), problems, out)
                good.pop(i)
                keep[i] = False
        if not keep.all():
            stamps = {n: column.filter(keep) for n, column in stamps.items()}
        if good and out.batch:
            out.pending.append((good, served, stamps))
        elif good:
            out.records.append(self._table(good, served, stamps, out))
        return keys

    def flush(self, out: Tables) -> None:
        """The checked pages `out` holds (`batch`) as one table: Arrow's cost is per call."""
        if not out.pending:
            return
        pending, out.pending = out.pending, []
        good = [record for page in pending for record in page[0]]
        served = [record for page in pending for record in page[1]]
        stamps = {  # a page checked record by record has datetimes, not a column
            n: pa.concat_arrays(
                [s[n] if n in s else pa.array([r[n] for r in g], TIMESTAMP) for g, _, s in pending]
            )
            for n in self.stamps
        }
        out.records.append(self._table(good, served, stamps, out))

    def _unsuppressed(self, records: list[Any]) -> list[Any]:
        """The records of users not on the suppression list: an erased user's (by id, or by
        e-mail) is dropped here, before it is checked, stored or quarantined. Their keys were
        counted already: the read stays complete, and `suppressed` says how many were dropped."""
        assert self.suppression is not None
        key, check = USER_KEYS[self.endpoint.name], self.suppression

        def erased(record: Any) -> bool:
            if type(record) is not dict:
                return False
            return check.user_id(record.get(key)) or (
                self.endpoint is USERS and check.email(record.get("email"))
            )

        kept = [record for record in records if not erased(record)]
        if dropped := len(records) - len(kept):
            with self._lock:
                self.suppressed += dropped
        return kept

    def _table(
        self, good: list[dict], served: list[Any], stamps: dict[str, pa.Array], out: Tables
    ) -> pa.Table:
        """The records as a table (timestamps: the page check's columns, else datetimes)."""
        hashes = pa.array([record_hash(r) for r in served], pa.string())
        columns: dict[str, Any] = {n: [r[n] for r in good] for n in self.endpoint.fields}
        columns.update(stamps)
        if self.endpoint is LISTEN_HISTORY:  # items of the versions raw does not hold yet
            lists, known_ = columns["items"], self.known_hashes
            columns["item_count"] = pa.array([len(x) for x in lists], pa.int32())
            new = np.arange(len(lists))
            if known_ is not None and len(known_):
                new = np.flatnonzero(~known(known_, hashes))
            items = pa.array([lists[i] for i in new], pa.list_(pa.int64()))
            parent = pc.list_parent_indices(items).to_numpy()
            positions = np.arange(len(parent)) - items.offsets.to_numpy()[parent]
            owner = new[parent]
            user_ids = pa.array(columns["user_id"], pa.int64()).take(owner)
            flat = [hashes.take(owner), user_ids, pa.array(positions, pa.int32())]
            out.items.append(
                pa.Table.from_arrays([*flat, pc.list_flatten(items)], schema=ITEMS_SCHEMA)
            )
        columns[RECORD_HASH] = hashes
        table = pa.table({n: columns[n] for n in self.schema.names}, schema=self.schema)
        drift: dict[str, list[str | None]] = {}
        for i in [i for i, r in enumerate(served) if len(r) > len(self.endpoint.fields)]:
            record = served[i]  # a record with all the fields and more
            for name in record.keys() - self.endpoint.fields.keys():
                values = drift.setdefault(self._column_for(name), [None] * len(served))
                values[i] = to_json(record[name])
        for column, values in drift.items():
            table = table.append_column(column, pa.array(values, pa.string()))
        return table

    def _column_for(self, name: str) -> str:
        with self._lock:
            if name not in self.drift:
                column = dlt.Schema(self.endpoint.name).naming.normalize_identifier(name)
                taken = {RECORD_HASH, DLT_ID, *self.schema.names, *self.drift.values()}
                while column in taken:
                    column = f"api_{column}"
                self.drift[name] = column
            return self.drift[name]

    def _reject(self, page: int, record: Any, reasons: list[str], out: Tables) -> None:
        key = record.get(self.endpoint.key) if type(record) is dict else None
        key = key if type(key) is int else None
        text = to_json(record)
        if len(text) > self.max_field_bytes:
            text = to_json(_cut(record, self.max_field_bytes))
        if len(text) > MAX_PAYLOAD_BYTES:
            text = to_json({"_cut": f"a payload of {len(text)} characters of JSON, not stored"})
        out.rejected.append(
            {
                "endpoint": self.endpoint.name,
                "page": page,
                "reason": "; ".join(reasons),
                "record_key": None if key is None else str(key),
                "payload": text,
                "run_id": self.run_id,
                "rejected_at": datetime.now(UTC),
            }
        )
        with self._lock:
            self.rejected += 1
            self.rejected_by_reason.update(r.split(" (")[0] for r in reasons)
            if key is not None:
                self.rejected_keys.append(key)

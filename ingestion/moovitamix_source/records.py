"""Records as served -> contract checks -> Arrow batches (records, items, rejects).

Every record is checked against its endpoint's contract. A record that passes becomes one row
of its raw table (and, for listen_history, one row per element of `items`); a record that does
not becomes one row of raw._rejected with the reason, and never stops the good ones. Fields the
contract does not know are kept as new JSON columns and reported as schema drift.

Rows are collected per column and turned into Arrow tables a batch at a time: dlt loads Arrow
tables through its fast path, and memory stays bounded by the batch size.

The API is untrusted. Values are kept verbatim (quotes, semicolons, SQL, control characters,
emoji, right-to-left marks: they are data, never SQL), except what Postgres cannot store or
what is absurd, which rejects the record with a reason:
- a string holding a NUL character (Postgres text cannot), or a lone UTF-16 surrogate (not
  Unicode: no UTF-8 for it);
- a string field over `max_field_bytes` of UTF-8 (default 64 KiB), or a new field whose JSON
  is over it, or a new field's name over MAX_NAME_CHARS characters.
The stored payload of a rejected record has its strings over the cap cut (`_cut_payload`).
Reasons name fields and sizes, never the values of text fields (names and emails are PII).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from ingestion.moovitamix_source.contract import (
    DLT_ID,
    ITEMS_SCHEMA,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_SCHEMA,
    RESERVED_COLUMNS,
    TIMESTAMP,
    Endpoint,
    Kind,
    record_schema,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_MAX_FIELD_BYTES = 64 * 1024  # UTF-8 bytes of a string field (or a new field's JSON)
MAX_NAME_CHARS = 256  # of a new field's name
MAX_PAYLOAD_BYTES = 1024 * 1024  # of a rejected record's stored payload, after cutting fields
_NAMING = NamingConvention()
_NAIVE_US = pa.timestamp("us")


def to_json(value: Any) -> str:
    """JSON text of a parsed value (orjson; the stdlib for what orjson refuses, e.g. huge ints)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates: escaped, so the text is valid UTF-8
            text = json.dumps(value, separators=(",", ":"))
        return text


def record_hash(record: dict[str, Any]) -> str:
    """Content hash of a record as served (every field, new ones included; key order ignored)."""
    try:
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def record_hashes(records: list[dict[str, Any]]) -> list[str]:
    """`record_hash` of each record, without a Python call per record where orjson can."""
    dumps, sort_keys, blake2b = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.blake2b
    try:
        return [blake2b(dumps(r, option=sort_keys), digest_size=16).hexdigest() for r in records]
    except TypeError:  # a value orjson refuses (a huge int): the stdlib for the page
        return [record_hash(r) for r in records]


def dlt_ids(n: int) -> pa.Array:
    """`n` unique row ids (`_dlt_id`): 12 random bytes each, base64 (dlt's take 10), made in
    one go rather than one Python string per row."""
    text = base64.b64encode(secrets.token_bytes(12 * n))  # 12 bytes -> exactly 16 characters
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 -> naive UTC datetime (naive input is UTC; an offset is converted)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _describe(value: Any) -> str:
    text = to_json(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def text_problem(value: str, max_bytes: int) -> tuple[str, str] | None:
    """Why a string cannot be stored as it is (None: it can); never quotes the value."""
    if "\x00" in value:
        return "holds a NUL character", "(Postgres text cannot store it)"
    if len(value) * 4 <= max_bytes and value.isascii():
        return None
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "not valid Unicode", "(a lone surrogate)"
    if size > max_bytes:
        return f"over the {max_bytes}-byte field cap", f"({size} bytes)"
    return None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, object keys included."""
    if type(value) is str:
        yield value
    elif type(value) is list:
        for v in value:
            yield from _strings(v)
    elif type(value) is dict:
        for k, v in value.items():
            yield k
            yield from _strings(v)


def extra_field_problem(name: str, value: Any, max_bytes: int) -> tuple[str, str] | None:
    """Why a field the contract does not know cannot be kept (None: it can)."""
    if len(name) > MAX_NAME_CHARS:
        return "a new field's name: too long", f"({len(name)} > {MAX_NAME_CHARS} characters)"
    label = f"new field {_describe(name)}"
    for text in (name, *_strings(value)):
        problem = text_problem(text, 2**62)
        if problem:
            return f"{label}: {problem[0]}", problem[1]
    size = len(to_json(value).encode())
    if size > max_bytes:
        return f"{label}: over the {max_bytes}-byte field cap", f"({size} bytes of JSON)"
    return None


def _cut(value: Any, max_bytes: int) -> Any:
    if type(value) is str:
        if len(value) * 4 > max_bytes and len(value.encode(errors="surrogatepass")) > max_bytes:
            return f"<cut: {len(value.encode(errors='surrogatepass'))} bytes, over the field cap>"
        return value
    if type(value) is list:
        return [_cut(v, max_bytes) for v in value]
    if type(value) is dict:
        return {_cut(k, max_bytes): _cut(v, max_bytes) for k, v in value.items()}
    return value


def _cut_payload(record: Any, max_bytes: int) -> str:
    """The JSON text of a rejected record as served, its strings over the cap replaced by a
    note of their size (a 10 MB name is not copied into raw._rejected); a payload still over
    MAX_PAYLOAD_BYTES is replaced by a note."""
    text = to_json(record)
    if len(text) <= max_bytes:
        return text
    text = to_json(_cut(record, max_bytes))
    if len(text) > MAX_PAYLOAD_BYTES:
        text = to_json({"_cut": f"a payload of {len(text)} characters of JSON, not stored"})
    return text


class KnownHashes:
    """The record hashes already in raw (a sorted array: 32 bytes per hash, no per-item objects)."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        array = np.array(list(hashes), dtype="S32")
        self._sorted = np.unique(array)

    @classmethod
    def from_chunks(cls, chunks: Iterable[list[str]]) -> KnownHashes:
        known = cls()
        parts = [np.array(chunk, dtype="S32") for chunk in chunks if chunk]
        if parts:
            known._sorted = np.unique(np.concatenate(parts))
        return known

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, value: str) -> bool:
        return bool(self.contains_many([value])[0])

    def contains_many(self, values: list[str]) -> np.ndarray:
        """A boolean per value: is it known?"""
        if not len(self._sorted) or not values:
            return np.zeros(len(values), dtype=bool)
        keys = np.array(values, dtype="S32")
        at = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
        return self._sorted[at] == keys


@dataclass
class Drift:
    """A field the contract does not know, kept as column `column` (JSON)."""

    field: str
    column: str
    first_page: int
    records: int = 0


@dataclass
class Reject:
    page: int
    key: int | None
    payload: Any
    reasons: list[tuple[str, str]]  # (what, detail): what groups, detail says the value

    @property
    def reason(self) -> str:
        return "; ".join(f"{what} {detail}".strip() for what, detail in self.reasons)


def check_record(
    endpoint: Endpoint, record: Any, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The typed values of a record, and the ways it breaks the contract (empty: it passes)."""
    if type(record) is not dict:
        return {}, [("record: not an object", f"but {_type_name(record)}")]
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for f in endpoint.fields:
        if f.name not in record:
            problems.append((f"{f.name}: missing", ""))
            continue
        value = record[f.name]
        if value is None:
            problems.append((f"{f.name}: null", f"(expected {f.kind.value})"))
        elif f.kind is Kind.TEXT:
            if type(value) is not str:
                problems.append((f"{f.name}: not a string", f"but {_type_name(value)}"))
            elif problem := text_problem(value, max_field_bytes):
                problems.append((f"{f.name}: {problem[0]}", problem[1]))
            else:
                values[f.name] = value
        elif f.kind is Kind.INT:
            if _is_int(value):
                values[f.name] = value
            else:
                problems.append(
                    (f"{f.name}: not an integer", f"but {_type_name(value)} {_describe(value)}")
                )
        elif f.kind is Kind.TIMESTAMP:
            if type(value) is not str:
                problems.append((f"{f.name}: not a timestamp", f"but {_type_name(value)}"))
                continue
            try:
                values[f.name] = parse_timestamp(value)
            except ValueError:
                problems.append((f"{f.name}: unparsable timestamp", _describe(value)))
        elif f.kind is Kind.INT_LIST:
            if type(value) is not list:
                problems.append((f"{f.name}: not a list", f"but {_type_name(value)}"))
            elif not all(type(x) is int for x in value) or (
                value and (min(value) < INT64_MIN or max(value) > INT64_MAX)
            ):
                bad = next(i for i, x in enumerate(value) if not _is_int(x))
                problems.append(
                    (
                        f"{f.name}: an element is not an integer",
                        f"({f.name}[{bad}] = {_describe(value[bad])})",
                    )
                )
            else:
                values[f.name] = value
    for name in record.keys() - endpoint.field_names:
        if problem := extra_field_problem(name, record[name], max_field_bytes):
            problems.append(problem)
    return values, problems


# What Arrow's timestamp parser takes; other ISO 8601 forms are rewritten to it.
_TIMESTAMP_FORM = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?"
_ARROW_TIMESTAMP_LINES = re.compile(rf"(?:{_TIMESTAMP_FORM}\n)*{_TIMESTAMP_FORM}")


def _cast_timestamps(values: list[str]) -> pa.Array:
    """ISO 8601 strings in `_TIMESTAMP_FORM` -> timestamps labelled UTC."""
    return pc.cast(pa.array(values, pa.string()), _NAIVE_US).cast(TIMESTAMP)


def _timestamps_ok(column: list[str], *, lenient: bool) -> list[str] | None:
    """The column, if every value is a timestamp Arrow will parse; None if one is not.

    `lenient`: the values are known to parse (`parse_timestamp`); those in another ISO form
    (an offset, a space for the T) are rewritten as naive UTC.
    """
    joined = "\n".join(column)  # one regex over the column: no Python call per value
    try:
        if not column or (
            joined.count("\n") == len(column) - 1 and _ARROW_TIMESTAMP_LINES.fullmatch(joined)
        ):
            all(map(datetime.fromisoformat, column))  # ranges: no month 13, no Feb 30
            return column
    except ValueError:
        return None
    return [parse_timestamp(v).isoformat() for v in column] if lenient else None


def _texts_ok(column: list[str], max_bytes: int) -> bool:
    """No NUL, no lone surrogate, none over the cap (False: maybe one is; check each)."""
    joined = "".join(column)
    if "\x00" in joined or (column and max(map(len, column)) * 4 > max_bytes):
        return False
    if not joined.isascii():
        try:
            joined.encode()
        except UnicodeEncodeError:
            return False
    return True


def _page_columns(
    endpoint: Endpoint,
    records: list[Any],
    *,
    lenient: bool = False,
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
) -> dict | None:
    """The page's fields as columns if every record meets the contract, else None.

    The fast path: a few C-level passes per field instead of Python code per value, and no
    call that releases the GIL (the fetching threads would take it for milliseconds).
    `lenient`: the records were checked one by one already.
    """
    names, n = endpoint.field_names, len(endpoint.fields)
    if set(map(type, records)) - {dict}:
        return None
    # Every record has n keys or more, and each field is looked up below (a KeyError: one is
    # missing): the keys are checked without a Python loop over the records.
    lengths = set(map(len, records))
    if lengths and min(lengths) < n:
        return None
    if lengths - {n}:
        for r in records:
            if len(r) > n:  # new fields: kept only if they can be stored
                if not r.keys() >= names:
                    return None
                if not lenient and any(
                    extra_field_problem(name, r[name], max_field_bytes) for name in r.keys() - names
                ):
                    return None
    columns: dict[str, Any] = {}
    for f in endpoint.fields:
        try:
            column = [r[f.name] for r in records]
        except KeyError:
            return None
        types = set(map(type, column))
        if f.kind is Kind.TEXT:
            if types - {str} or not (lenient or _texts_ok(column, max_field_bytes)):
                return None
        elif f.kind is Kind.INT:
            if types - {int} or (column and (min(column) < INT64_MIN or max(column) > INT64_MAX)):
                return None
        elif f.kind is Kind.TIMESTAMP:
            if types - {str}:
                return None
            column = _timestamps_ok(column, lenient=lenient)
            if column is None:
                return None
        elif f.kind is Kind.INT_LIST:
            if types - {list}:
                return None
            flat = list(chain.from_iterable(column))
            if set(map(type, flat)) - {int} or (
                flat and (min(flat) < INT64_MIN or max(flat) > INT64_MAX)
            ):
                return None
            columns[f"{f.name}/flat"] = flat
        columns[f.name] = column
    return columns


class _Columns:
    """Rows of one Arrow schema, collected column by column."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.data: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.rows = 0

    def to_table(self) -> pa.Table:
        arrays = []
        for f in self.schema:
            values = self.data[f.name]
            if f.name == DLT_ID and not values:
                arrays.append(dlt_ids(self.rows))
            elif f.type == TIMESTAMP and values and type(values[0]) is str:
                arrays.append(_cast_timestamps(values))
            elif f.type == TIMESTAMP:  # naive UTC datetimes: build naive, then label as UTC
                arrays.append(pa.array(values, _NAIVE_US).cast(TIMESTAMP))
            else:
                arrays.append(pa.array(values, f.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def clear(self) -> None:
        for values in self.data.values():
            values.clear()
        self.rows = 0


@dataclass
class _Items:
    """listen_history items waiting for the next batch: per version, then per element."""

    hashes: list[str] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    track_ids: list[int] = field(default_factory=list)

    def to_table(self) -> pa.Table:
        lengths = np.asarray(self.lengths, dtype=np.int64)
        owner = np.repeat(np.arange(len(lengths)), lengths)
        starts = np.cumsum(lengths) - lengths
        positions = np.arange(len(self.track_ids), dtype=np.int64) - starts[owner]
        return pa.Table.from_arrays(
            [
                pa.array(self.hashes, pa.string()).take(owner),
                pa.array(np.asarray(self.user_ids, dtype=np.int64)[owner]),
                pa.array(positions.astype(np.int32)),
                pa.array(self.track_ids, pa.int64()),
            ],
            schema=ITEMS_SCHEMA,
        )


@dataclass
class Batch:
    """Arrow tables ready for dlt: records (with `drift` JSON columns), items, rejects."""

    records: pa.Table | None = None
    drift_columns: list[str] = field(default_factory=list)
    items: pa.Table | None = None
    rejected: pa.Table | None = None


class RecordBuilder:
    """Checks the records of an endpoint, page by page, into Arrow batches.

    `known_hashes`: listen_history versions whose items raw already holds (not re-sent).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        run_id: str,
        known_hashes: KnownHashes | None = None,
        batch_rows: int = 10_000,
        batch_items: int = 200_000,
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        now: Callable[[], datetime] = lambda: datetime.now(UTC).replace(tzinfo=None),
    ) -> None:
        self.endpoint = endpoint
        self.run_id = run_id
        self.known_hashes = known_hashes or KnownHashes()
        self.batch_rows = batch_rows
        self.batch_items = batch_items
        self.max_field_bytes = max_field_bytes
        self._now = now
        self._schema = record_schema(endpoint)
        self._records = _Columns(self._schema)
        self._drift_values: dict[str, list[Any]] = {}
        self._pending_items = _Items()
        self._rejected = _Columns(REJECTED_SCHEMA)
        self._scalar_fields = [f.name for f in endpoint.fields if f.kind is not Kind.INT_LIST]
        self._known_fields = endpoint.field_names
        self._reserved = set(self._schema.names) | RESERVED_COLUMNS
        self.drift: dict[str, Drift] = {}  # by original field name
        self.rejected_by_reason: Counter[str] = Counter()
        self.rejected_keys: list[int] = []  # ids of rejected records that had a readable id
        self.records = 0
        self.rejected = 0
        self.items_sent = 0

    # ---- one page ----------------------------------------------------------------------------

    def add_page(self, page: int, records: list[Any]) -> list[int | None]:
        """Check and collect one page; returns the key of each record (None if unreadable)."""
        self.records += len(records)
        columns = _page_columns(self.endpoint, records, max_field_bytes=self.max_field_bytes)
        if columns is not None:
            self._append(page, records, columns)
            return list(columns[self.endpoint.key])
        # Some record breaks the contract: sort the page out record by record.
        keys: list[int | None] = []
        good = []
        key_name = self.endpoint.key
        for record in records:
            values, problems = check_record(self.endpoint, record, self.max_field_bytes)
            key = values.get(key_name)
            if key is None and type(record) is dict and _is_int(record.get(key_name)):
                key = record[key_name]
            keys.append(key)
            if problems:
                self._reject(Reject(page, key, record, problems))
            else:
                good.append(record)
        columns = _page_columns(self.endpoint, good, lenient=True)
        assert columns is not None, "records that pass one by one pass as a page"
        self._append(page, good, columns)
        return keys

    def _append(self, page: int, records: list[dict[str, Any]], columns: dict) -> None:
        if not records:
            return
        hashes = record_hashes(records)
        data = self._records.data
        for name in self._scalar_fields:
            data[name].extend(columns[name])
        if self.endpoint is LISTEN_HISTORY:
            items = columns["items"]
            data["item_count"].extend(map(len, items))
            self._add_items(hashes, columns[self.endpoint.key], items, columns["items/flat"])
        data[RECORD_HASH].extend(hashes)
        n_fields = len(self._known_fields)
        first_row = self._records.rows
        for i, record in enumerate(records):
            if len(record) > n_fields:
                self._add_drift(page, record, first_row + i)
        self._records.rows += len(records)

    def _add_items(
        self, hashes: list[str], user_ids: list[int], items: list[list[int]], flat: list[int]
    ) -> None:
        """One row per element of `items`, for the versions raw does not hold yet."""
        known = self.known_hashes.contains_many(hashes)
        if known.any():
            keep = np.flatnonzero(~known).tolist()
            hashes = [hashes[i] for i in keep]
            user_ids = [user_ids[i] for i in keep]
            items = [items[i] for i in keep]
            flat = list(chain.from_iterable(items))
        pending = self._pending_items
        pending.hashes.extend(hashes)
        pending.user_ids.extend(user_ids)
        pending.lengths.extend(map(len, items))
        pending.track_ids.extend(flat)
        self.items_sent += len(flat)

    def _add_drift(self, page: int, record: dict[str, Any], row: int) -> None:
        for name in record.keys() - self._known_fields:
            drift = self.drift.get(name)
            if drift is None:
                drift = self.drift[name] = Drift(name, self._column_for(name), page)
            drift.records += 1
            values = self._drift_values.setdefault(drift.column, [])
            values.extend([None] * (row - len(values)))
            values.append(to_json(record[name]))

    def _column_for(self, name: str) -> str:
        column = _NAMING.normalize_identifier(name)
        taken = self._reserved | {d.column for d in self.drift.values()}
        while column in taken:
            column = f"api_{column}"
        return column

    def _reject(self, reject: Reject) -> None:
        data = self._rejected.data
        data["endpoint"].append(self.endpoint.name)
        data["page"].append(reject.page)
        data["record_key"].append(None if reject.key is None else str(reject.key))
        data["payload"].append(_cut_payload(reject.payload, self.max_field_bytes))
        data["reason"].append(reject.reason)
        data["run_id"].append(self.run_id)
        data["rejected_at"].append(self._now())
        self._rejected.rows += 1
        self.rejected += 1
        self.rejected_by_reason.update(what for what, _ in reject.reasons)
        if reject.key is not None:
            self.rejected_keys.append(reject.key)

    # ---- batches -----------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        return (
            self._records.rows >= self.batch_rows
            or len(self._pending_items.track_ids) >= self.batch_items
        )

    def flush(self) -> Batch:
        """The rows collected so far as Arrow tables (None for an empty table); starts anew."""
        batch = Batch()
        if self._records.rows:
            table = self._records.to_table()
            for column, values in self._drift_values.items():
                values.extend([None] * (self._records.rows - len(values)))
                table = table.append_column(pa.field(column, pa.string()), pa.array(values))
                batch.drift_columns.append(column)
            batch.records = table
            self._records.clear()
            self._drift_values = {}
        if self._pending_items.track_ids:
            batch.items = self._pending_items.to_table()
            self._pending_items = _Items()
        if self._rejected.rows:
            batch.rejected = self._rejected.to_table()
            self._rejected.clear()
        return batch

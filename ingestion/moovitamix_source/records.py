"""A page of records as served -> Arrow tables for dlt: the records (with their content hash),
listen_history's items (one row per element, in order), and the records that break the
contract (to raw._rejected, with the reason). A bad record never stops the good ones.

The API is untrusted: values are kept verbatim (quotes, SQL, control characters, emoji: they
are data), except what Postgres cannot store or what is absurd, which rejects the record: a NUL
character, a lone UTF-16 surrogate, a string over the field cap, a new field whose name or JSON
is too long. Reasons name fields, kinds and sizes, never the text of a value (names and emails
are PII); a rejected payload has its strings over the cap cut.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention
from pydantic import TypeAdapter, ValidationError

from ingestion.moovitamix_source.contract import (
    ITEMS_SCHEMA,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_SCHEMA,
    RESERVED_COLUMNS,
    Endpoint,
    record_schema,
    record_type,
    text_problem,
)

MAX_NAME_CHARS = 256  # of a new field's name
MAX_PAYLOAD_BYTES = 2**20  # of a rejected record's stored payload, after cutting its fields
_NAMING = NamingConvention()
_REASONS = {
    "missing": "missing",
    "int_type": "not an integer",
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "string_type": "not a string",
    "list_type": "not a list",
    "greater_than_equal": "out of the 64-bit range",
    "less_than": "out of the 64-bit range",
    "datetime_parsing": "unparsable timestamp",
    "datetime_from_date_parsing": "unparsable timestamp",
    "datetime_type": "unparsable timestamp",
    "dict_type": "not an object",
    "model_type": "not an object",
    "string_unicode": "not valid Unicode (a lone surrogate)",
}


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


def _reason(error: Any) -> str:
    """`field: what is wrong` from a Pydantic error; never the text of a value."""
    where = "".join(f"[{p}]" if type(p) is int else p for p in error["loc"]) or "record"
    what = _REASONS.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    return f"{where}: {'null' if error['input'] is None and what != 'missing' else what}"


def _cut(value: Any, max_bytes: int) -> Any:
    if type(value) is str and len(value.encode(errors="surrogatepass")) > max_bytes:
        return f"<cut: {len(value.encode(errors='surrogatepass'))} bytes, over the field cap>"
    if type(value) is list:
        return [_cut(v, max_bytes) for v in value]
    if type(value) is dict:
        return {_cut(k, max_bytes): _cut(v, max_bytes) for k, v in value.items()}
    return value


def _payload(record: Any, max_bytes: int) -> str:
    text = to_json(record)
    if len(text) > max_bytes:
        text = to_json(_cut(record, max_bytes))
    if len(text) > MAX_PAYLOAD_BYTES:
        text = to_json({"_cut": f"a payload of {len(text)} characters of JSON, not stored"})
    return text


def _strings(value: Any) -> list[str]:
    if type(value) is str:
        return [value]
    if type(value) is list:
        return [s for v in value for s in _strings(v)]
    if type(value) is dict:
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    return []


def extra_field_problem(name: str, value: Any, max_bytes: int) -> str | None:
    """Why a field the contract does not know cannot be kept (None: it can)."""
    if len(name) > MAX_NAME_CHARS:
        return f"a new field's name: too long ({len(name)} > {MAX_NAME_CHARS} characters)"
    label = f"new field {to_json(name)[:40]}"
    for text in (name, *_strings(value)):
        if problem := text_problem(text, 2**62):
            return f"{label}: {problem}"
    size = len(to_json(value).encode())
    return (
        f"{label}: over the {max_bytes}-byte field cap ({size} bytes of JSON)"
        if (size > max_bytes)
        else None
    )


@dataclass
class Tables:
    """A batch of pages as rows for dlt: records tables (with drift columns), items tables,
    rejected rows."""

    records: list[pa.Table] = field(default_factory=list)
    items: list[pa.Table] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def rejected_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rejected, schema=REJECTED_SCHEMA)


class Checker:
    """Checks one endpoint's pages against its contract (from the fetching threads)."""

    def __init__(self, endpoint: Endpoint, run_id: str, max_field_bytes: int) -> None:
        self.endpoint, self.run_id, self.max_field_bytes = endpoint, run_id, max_field_bytes
        self.page_type = TypeAdapter(list[record_type(endpoint)])  # type: ignore[misc]
        self.careful_type = TypeAdapter(record_type(endpoint, max_field_bytes))
        self.schema = record_schema(endpoint, with_dlt_id=False)
        self.drift: dict[str, str] = {}  # new field -> its column
        self.rejected_by_reason: Counter[str] = Counter()
        self.rejected_keys: list[int] = []  # ids of rejected records that had a readable id
        self.rejected = 0
        self._lock = threading.Lock()

    def page(self, number: int, records: list[Any], careful: bool, out: Tables) -> list[Any]:
        """Check one page into `out`; returns the key of each record (None: unreadable)."""
        key = self.endpoint.key
        keys = [
            r.get(key) if type(r) is dict and type(r.get(key)) is int else None for r in records
        ]
        good: list[dict[str, Any]] = []
        served: list[dict[str, Any]] = []
        try:
            if careful:
                raise ValueError("check each record")
            good, served = self.page_type.validate_python(records), records
        except (ValidationError, ValueError):
            for record in records:
                try:
                    good.append(self.careful_type.validate_python(record))
                    served.append(record)
                except ValidationError as exc:
                    self._reject(number, record, [_reason(e) for e in exc.errors()], out)
        n = len(self.endpoint.fields)
        for i in reversed([i for i, r in enumerate(served) if len(r) > n]):
            new = served[i].keys() - self.endpoint.fields.keys()  # kept unless unstorable
            limit = self.max_field_bytes
            if problems := [p for f in new if (p := extra_field_problem(f, served[i][f], limit))]:
                self._reject(number, served.pop(i), problems, out)
                good.pop(i)
        if good:
            out.records.append(self._table(good, served, out))
        return keys

    def _table(self, good: list[dict], served: list[Any], out: Tables) -> pa.Table:
        hashes = pa.array([record_hash(r) for r in served], pa.string())
        columns: dict[str, Any] = {
            n: [r[n] for r in good] for n in self.schema.names[:-1] if n != "item_count"
        }
        columns[RECORD_HASH] = hashes
        if self.endpoint is LISTEN_HISTORY:
            items = pa.array([r["items"] for r in good], pa.list_(pa.int64()))
            columns["item_count"] = pc.list_value_length(items).cast(pa.int32())
            owner = pc.list_parent_indices(items).to_numpy()
            positions = np.arange(len(owner)) - items.offsets.to_numpy()[owner]
            out.items.append(
                pa.Table.from_arrays(
                    [
                        hashes.take(owner),
                        pa.array(columns["user_id"], pa.int64()).take(owner),
                        pa.array(positions, pa.int32()),
                        pc.list_flatten(items),
                    ],
                    schema=ITEMS_SCHEMA,
                )
            )
        table = pa.table({n: columns[n] for n in self.schema.names}, schema=self.schema)
        drift: dict[str, list[str | None]] = {}
        for i, record in enumerate(served):
            for name in record.keys() - self.endpoint.fields.keys():
                drift.setdefault(self._column_for(name), [None] * len(served))[i] = to_json(
                    record[name]
                )
        for column, values in drift.items():
            table = table.append_column(column, pa.array(values, pa.string()))
        return table

    def _column_for(self, name: str) -> str:
        with self._lock:
            if name not in self.drift:
                column = _NAMING.normalize_identifier(name)
                while column in RESERVED_COLUMNS | set(self.schema.names) | set(
                    self.drift.values()
                ):
                    column = f"api_{column}"
                self.drift[name] = column
            return self.drift[name]

    def _reject(self, page: int, record: Any, reasons: list[str], out: Tables) -> None:
        key = record.get(self.endpoint.key) if type(record) is dict else None
        key = key if type(key) is int else None
        out.rejected.append(
            {
                "endpoint": self.endpoint.name,
                "page": page,
                "record_key": None if key is None else str(key),
                "payload": _payload(record, self.max_field_bytes),
                "reason": "; ".join(reasons),
                "run_id": self.run_id,
                "rejected_at": datetime.now(UTC),
            }
        )
        with self._lock:
            self.rejected += 1
            self.rejected_by_reason.update(r.split(" (")[0] for r in reasons)
            if key is not None:
                self.rejected_keys.append(key)

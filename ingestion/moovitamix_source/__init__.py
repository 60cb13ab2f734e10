"""The dlt source of the MooVitamix API: one resource per endpoint (tracks, users,
listen_history), each a complete extract of the endpoint, as Arrow tables (dlt's fast path).

A resource reads page 1 (it says how many pages there are), then yields `dlt.defer`red tasks
that fetch a few pages each (`IngestionConfig.pages_per_task`) and check them (`records`):
dlt runs them in its extract thread pool, at most `max_parallel_items` in flight (memory stays
bounded). A task returns its tables, each routed by `dlt.mark.with_table_name`:

- the records to `<endpoint>`: scd2 on `record_hash` (no merge key: the extract is complete),
  or appended to a snapshot (`SourceRun.snapshot`, the lake, with `_snapshot_at`);
- listen_history's items to `listen_history__items`, one row per element (append; on scd2 only
  for versions raw does not hold yet);
- rejected records to `_rejected` (append).

The task that completes an endpoint checks its read (records == total, ids unique, total
unchanged) and its rejects; a read that does not add up raises `ReadMismatch` and fails the
extract (the run reads again). Rows of rejected ids that raw holds are carried, so they stay
current. With `SourceRun.summary`, the last endpoint to complete adds the run's stats table.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dlt
import numpy as np
import pyarrow as pa

from ingestion.config import IngestionConfig
from ingestion.moovitamix_source.contract import (
    DLT_ID,
    ENDPOINTS,
    ITEMS_SCHEMA,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_SCHEMA,
    REJECTED_TABLE,
    TIMESTAMP,
    Endpoint,
    record_schema,
)
from ingestion.moovitamix_source.http import Api, Counters, Page
from ingestion.moovitamix_source.records import Checker, Tables

# New tables and columns may appear (schema drift is kept); the type of a column never changes.
SCHEMA_CONTRACT = {"tables": "evolve", "columns": "evolve", "data_type": "freeze"}
SNAPSHOT_AT = "_snapshot_at"
LOAD_ID = "_dlt_load_id"
STATS_TABLE = "_ingestion_stats"


class ReadMismatch(RuntimeError):
    """The records of a read do not add up; `problems` says what differed."""

    def __init__(self, endpoint: str, problems: list[str]) -> None:
        self.endpoint, self.problems = endpoint, problems
        super().__init__(f"{endpoint}: " + "; ".join(problems))


class TooManyRejects(RuntimeError):
    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")


@dataclass
class ReadCheck:
    """Is a read complete? Records == the first total reported, that total unchanged, ids
    unique (kept as int64 arrays, 12 bytes a record with the page)."""

    total: int | None = None
    received: int = 0
    first: tuple[int, int] | None = None  # (page, total)
    changed: tuple[int, int] | None = None
    ids: list[np.ndarray] = field(default_factory=list)
    pages: list[np.ndarray] = field(default_factory=list)

    def add(self, page: int, total: int | None, keys: list[int | None]) -> None:
        if total is not None:
            if self.first is None or page < self.first[0]:
                self.first, self.total = (page, total), total
            if total != self.total:
                self.changed = (page, total)
        self.received += len(keys)
        ids = np.array([k for k in keys if k is not None], dtype=np.int64)
        self.ids.append(ids)
        self.pages.append(np.full(len(ids), page, dtype=np.int32))

    def problems(self) -> list[str]:
        found = []
        if self.changed and self.first:
            found.append(
                f"the total changed during the read: page {self.first[0]} said "
                f"{self.first[1]}, page {self.changed[0]} said {self.changed[1]}"
            )
        if self.total is not None and self.received != self.total:
            found.append(f"received {self.received} records but the API's total is {self.total}")
        ids = np.concatenate(self.ids) if self.ids else np.array([], np.int64)
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            twice = unique[counts > 1]
            pages = sorted(int(p) for p in np.concatenate(self.pages)[ids == twice[0]])
            found.append(
                f"{len(twice)} id{'s' if len(twice) > 1 else ''} served more than once "
                f"(e.g. id {twice[0]} on pages {', '.join(map(str, pages))})"
            )
        return found


@dataclass
class Read:
    """One read of an endpoint, filled in by the resource and its tasks."""

    endpoint: Endpoint
    checker: Checker
    counters: Counters = field(default_factory=Counters)
    check: ReadCheck = field(default_factory=ReadCheck)
    planned_pages: int | None = None
    rows: Counter[str] = field(default_factory=Counter)  # by table: rows handed to dlt
    carried_forward: int = 0
    tasks: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


@dataclass
class SourceRun:
    """What the resources need from the run, and where they report."""

    api: Api
    config: IngestionConfig
    run_id: str
    boundary: datetime  # scd2 validity boundary / snapshot time of this run (aware, UTC)
    snapshot: bool = False  # append a complete snapshot (the lake), not scd2
    known_hashes: np.ndarray | None = None  # sorted hashes of the versions whose items raw holds
    carry: Callable[[Endpoint, list[int]], dict[str, pa.Table]] | None = None
    on_plan: Callable[[str, int | None], None] = lambda endpoint, pages: None
    on_page: Callable[[str], None] = lambda endpoint: None
    summary: Callable[[SourceRun], pa.Table] | None = None  # the stats table, last
    reads: dict[str, Read] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def process(self, read: Read, pages: list[Page]) -> list[Any]:
        """Check pages; their tables, marked for dlt."""
        out = Tables()
        for page in pages:
            keys = read.checker.page(page.number, page.items, page.careful, out)
            with read.lock:
                read.check.add(page.number, page.total, keys)
            self.on_page(read.endpoint.name)
        items = out.items
        if self.known_hashes is not None and len(self.known_hashes) and items:
            items = [t.filter(~known(self.known_hashes, t[RECORD_HASH])) for t in items]
        # one table each per task: dlt's per-item overhead (hints, schema) is per table
        tables = []
        if out.records:
            tables.append(
                (read.endpoint.table, pa.concat_tables(out.records, promote_options="default"))
            )
        tables += [(ITEMS_TABLE, pa.concat_tables(items))] if items else []
        if out.rejected:
            tables.append((REJECTED_TABLE, out.rejected_table()))
        return self.mark(read, tables)

    def mark(self, read: Read, tables: list[tuple[str, pa.Table]]) -> list[Any]:
        """The tables with dlt's columns, routed to their tables, with their hints."""
        marked = []
        load_id = dlt.current.load_package_state()["load_id"]
        for name, table in tables:
            with read.lock:
                read.rows[name] += table.num_rows
            drift = [c for c in table.column_names if c not in read.checker.schema.names]
            if name == read.endpoint.table and DLT_ID not in table.column_names:
                table = table.append_column(
                    pa.field(DLT_ID, pa.string(), False), dlt_ids(len(table))
                )
            at = pa.repeat(pa.scalar(load_id, pa.string()), table.num_rows)
            table = table.append_column(pa.field(LOAD_ID, pa.string(), False), at)
            if self.snapshot:
                at = pa.repeat(pa.scalar(self.boundary, TIMESTAMP), table.num_rows)
                table = table.append_column(pa.field(SNAPSHOT_AT, TIMESTAMP, False), at)
            if drift and name == read.endpoint.table and not self.snapshot:
                hints = dlt.mark.make_hints(
                    columns=[{"name": c, "data_type": "json", "nullable": True} for c in drift]
                )
                marked.append(dlt.mark.with_hints(table, hints))
            else:
                marked.append(dlt.mark.with_table_name(table, name))
        return marked

    def task(self, read: Read, numbers: range) -> Iterator[Any]:
        """A deferred task: fetch and check these pages; the last task completes the read."""
        pages = [self.api.page(read.endpoint.name, n, read.counters) for n in numbers]
        items = self.process(read, pages)
        with read.lock:
            read.done += 1
            last = read.done == read.tasks
        return iter(items + self.complete(read) if last else items)

    def complete(self, read: Read) -> list[Any]:
        """The read is in: check it, carry rejected ids' rows, end every table of it."""
        endpoint, checker = read.endpoint, read.checker
        if problems := read.check.problems():
            raise ReadMismatch(endpoint.name, problems)
        if checker.rejected:
            share = checker.rejected / read.check.received
            reasons = ", ".join(f"{r} ({n})" for r, n in checker.rejected_by_reason.most_common(3))
            if share > self.config.max_reject_share:
                raise TooManyRejects(
                    endpoint.name,
                    f"{checker.rejected} of {read.check.received} records break the contract "
                    f"({share:.1%} > the {self.config.max_reject_share:.1%} allowed): {reasons}",
                )
        tables: list[tuple[str, pa.Table]] = []
        if checker.rejected_keys and self.carry:
            carried = self.carry(endpoint, checker.rejected_keys)
            read.carried_forward = carried[endpoint.table].num_rows if carried else 0
            tables += list(carried.items())
        # every table gets a (maybe empty) table: so it exists, and an empty extract is one
        empty = [
            (endpoint.table, record_schema(endpoint, with_dlt_id=False)),
            (REJECTED_TABLE, REJECTED_SCHEMA),
        ]
        if endpoint is LISTEN_HISTORY:
            empty.append((ITEMS_TABLE, ITEMS_SCHEMA))
        tables += [(name, schema.empty_table()) for name, schema in empty]
        read.finished = time.monotonic()
        marked = self.mark(read, tables)
        with self.lock:
            last = all(r.finished for r in self.reads.values()) and len(self.reads) == len(
                ENDPOINTS
            )
        if last and self.summary:
            marked.append(dlt.mark.with_table_name(self.summary(self), STATS_TABLE))
        return marked


def dlt_ids(n: int) -> pa.Array:
    """`n` unique row ids (`_dlt_id`): 12 random bytes each, base64, made in one go. dlt's
    normalizer can add them too, but with one Python call per row, and to every table."""
    text = base64.b64encode(secrets.token_bytes(12 * n))  # 12 bytes -> exactly 16 characters
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def known(hashes: np.ndarray, column: pa.ChunkedArray) -> np.ndarray:
    """Which values of `column` are in the sorted `hashes` (32-byte strings: no objects)."""
    keys = column.to_numpy().astype("S32")
    at = np.minimum(np.searchsorted(hashes, keys), len(hashes) - 1)
    return hashes[at] == keys


def _pages(endpoint: Endpoint, run: SourceRun) -> Iterator[Any]:
    read = Read(endpoint, Checker(endpoint, run.run_id, run.config.max_field_bytes))
    with run.lock:
        run.reads[endpoint.name] = read
    size = run.config.page_size
    first = run.api.page(endpoint.name, 1, read.counters)
    pages = first.pages
    if pages is None and first.total is not None:
        pages = -(-first.total // size)
    read.planned_pages = pages
    run.on_plan(endpoint.name, pages)
    yield from run.process(read, [first])
    if pages is None:  # no total: read on to the first short page
        page = first
        while len(page.items) >= size:
            page = run.api.page(endpoint.name, page.number + 1, read.counters)
            yield from run.process(read, [page])
        pages = 1
    starts = range(2, pages + 1, run.config.pages_per_task)
    read.tasks = len(starts)
    if not read.tasks:
        yield from run.complete(read)
    for start in starts:
        numbers = range(start, min(start + run.config.pages_per_task, pages + 1))
        yield dlt.defer(run.task)(read, numbers)


def scd2(boundary: datetime) -> dict[str, Any]:
    return {
        "disposition": "merge",
        "strategy": "scd2",
        "boundary_timestamp": boundary,
        "row_version_column_name": RECORD_HASH,
    }


@dlt.source(name="moovitamix", max_table_nesting=0)
def moovitamix_source(run: SourceRun) -> Iterator[Any]:
    """The API's three endpoints as resources; see the module docstring."""
    for endpoint in ENDPOINTS.values():
        resource = dlt.resource(
            _pages(endpoint, run),
            name=endpoint.name,
            write_disposition="append" if run.snapshot else scd2(run.boundary),  # type: ignore[arg-type]
            schema_contract=SCHEMA_CONTRACT,  # type: ignore[arg-type]
        )
        for table in (ITEMS_TABLE, REJECTED_TABLE, STATS_TABLE):
            resource.apply_hints(
                table_name=table, write_disposition="append", create_table_variant=True
            )
        yield resource

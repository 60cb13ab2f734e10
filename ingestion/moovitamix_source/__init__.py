"""The dlt source of the MooVitamix API: one resource per endpoint, each a complete extract in
`dlt.defer`red page tasks; the last task checks the read (README.md, "What a run does")."""

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
    Checker,
    Endpoint,
    Tables,
)
from ingestion.moovitamix_source.http import Api, Counters, EndpointFailed, Page
from privacy.subjects import Suppression

# New tables and columns may appear (schema drift is kept); the type of a column never changes.
SCHEMA_CONTRACT = {"tables": "evolve", "columns": "evolve", "data_type": "freeze"}
SNAPSHOT_AT, LOAD_ID, STATS_TABLE = "_snapshot_at", "_dlt_load_id", "_ingestion_stats"


class ReadMismatch(EndpointFailed):
    """The records of a read do not add up; `problems` says what differed."""

    def __init__(self, endpoint: str, problems: list[str]) -> None:
        super().__init__(endpoint, f"{endpoint}: " + "; ".join(problems))
        self.problems = problems


@dataclass
class ReadCheck:
    """Is a read complete? Records == the first total reported, that total unchanged, ids
    unique (int64 arrays: 12 bytes a record with its page)."""

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
        self.ids.append(np.array([k for k in keys if k is not None], dtype=np.int64))
        self.pages.append(np.full(len(self.ids[-1]), page, dtype=np.int32))

    def problems(self) -> list[str]:
        found = []
        if self.changed and self.first:
            (page, total), (later, other) = self.first, self.changed
            said = f"page {page} said {total}, page {later} said {other}"
            found.append(f"the total changed during the read: {said}")
        if self.total is not None and self.received != self.total:
            found.append(f"received {self.received} records but the API's total is {self.total}")
        ids = np.concatenate([np.array([], np.int64), *self.ids])
        unique, counts = np.unique(ids, return_counts=True)
        if (twice := unique[counts > 1]).size:
            pages = ", ".join(map(str, sorted(np.concatenate(self.pages)[ids == twice[0]])))
            ids_ = f"{len(twice)} id{'s' if len(twice) > 1 else ''}"
            found.append(f"{ids_} served more than once (e.g. id {twice[0]} on pages {pages})")
        return found


@dataclass
class Read:
    """One read of an endpoint, filled in by its resource and tasks."""

    endpoint: Endpoint
    checker: Checker
    counters: Counters = field(default_factory=Counters)
    check: ReadCheck = field(default_factory=ReadCheck)
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


def dlt_ids(n: int) -> pa.Array:
    """`n` unique row ids (`_dlt_id`): 12 random bytes each, base64, made in one go. (dlt's
    normalizer adds them with one Python call per row, and to every table.)"""
    text = base64.b64encode(secrets.token_bytes(12 * n))  # 12 bytes -> exactly 16 characters
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


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
    summary: Callable[[SourceRun], pa.Table] | None = None  # the stats table, last
    existing: set[str] = field(default_factory=set)  # the destination's tables
    empty_format: str | None = None  # file format of an empty table (ADBC takes no empty file)
    suppression: Suppression | None = None  # erased users, dropped before anything is stored
    reads: dict[str, Read] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    checking: threading.Lock = field(default_factory=threading.Lock)  # see `task`

    def process(self, read: Read, pages: list[Page]) -> list[Any]:
        """Check pages into one table per raw table (dlt's cost is per item), marked."""
        out = Tables(batch=True)
        for page in pages:
            keys = read.checker.page(page.number, page.items, page.careful, out)
            with read.lock:
                read.check.add(page.number, page.total, keys)
        read.checker.flush(out)
        tables = [(ITEMS_TABLE, pa.concat_tables(out.items))] if out.items else []
        if out.records:
            tables.append(
                (read.endpoint.name, pa.concat_tables(out.records, promote_options="default"))
            )
        tables += [(REJECTED_TABLE, out.rejected_table())] if out.rejected else []
        return self.mark(tables, read)

    def mark(self, tables: list[tuple[str, pa.Table]], read: Read | None = None) -> list[Any]:
        """The tables with `_dlt_id` (records), `_dlt_load_id` (and `_snapshot_at`), routed."""
        load_id, marked = dlt.current.load_package_state()["load_id"], []
        for name, table in tables:
            n = table.num_rows
            drift = read and [c for c in table.column_names if c not in read.checker.schema.names]
            if read:
                with read.lock:
                    read.rows[name] += n
                if name == read.endpoint.name and DLT_ID not in table.column_names:
                    table = table.append_column(pa.field(DLT_ID, pa.string(), False), dlt_ids(n))
            table = table.append_column(LOAD_ID, pa.repeat(pa.scalar(load_id), n))
            if self.snapshot:
                table = table.append_column(
                    SNAPSHOT_AT, pa.repeat(pa.scalar(self.boundary, TIMESTAMP), n)
                )
            elif read and drift and name == read.endpoint.name:  # new fields: JSON
                columns = [{"name": c, "data_type": "json", "nullable": True} for c in drift]
                marked.append(dlt.mark.with_hints(table, dlt.mark.make_hints(columns=columns)))
                continue
            if not n and self.empty_format:
                main = read is not None and name == read.endpoint.name
                hints = dlt.mark.make_hints(
                    table_name=None if main else name, file_format=self.empty_format
                )
                marked.append(dlt.mark.with_hints(table, hints, create_table_variant=not main))
                continue
            marked.append(dlt.mark.with_table_name(table, name))
        return marked

    def task(self, read: Read, numbers: range) -> Iterator[Any]:
        """A deferred task: fetch and check these pages; the last task completes the read. The
        fetches overlap; the checks take turns (CPU work under the GIL: contending for it adds
        only hand-offs, see README.md, "Speed and size")."""
        pages = [self.api.page(read.endpoint.name, n, read.counters) for n in numbers]
        with self.checking:
            items = self.process(read, pages)
        with read.lock:
            read.done += 1
            last = read.done == read.tasks
        return iter(items + self.complete(read) if last else items)

    def complete(self, read: Read) -> list[Any]:
        """The read is in: check it, carry rejected ids' rows; a table without rows gets an empty
        one if it is new (it exists after the run) or the endpoint's (README.md: ADBC)."""
        endpoint, checker, name = read.endpoint, read.checker, read.endpoint.name
        if problems := read.check.problems():
            raise ReadMismatch(name, problems)
        share = checker.rejected / read.check.received if checker.rejected else 0.0
        if share > self.config.max_reject_share:
            reasons = ", ".join(f"{r} ({n})" for r, n in checker.rejected_by_reason.most_common(3))
            limit, n = self.config.max_reject_share, read.check.received
            message = f"{checker.rejected} of {n} records break the contract ({share:.1%} > the"
            raise EndpointFailed(name, f"{name}: {message} {limit:.1%} allowed): {reasons}")
        carried = self.carry(endpoint, checker.rejected_keys) if checker.rejected_keys else {}
        read.carried_forward = carried[endpoint.name].num_rows if carried else 0
        empty = {endpoint.name: checker.schema, REJECTED_TABLE: REJECTED_SCHEMA}
        if endpoint is LISTEN_HISTORY:
            empty[ITEMS_TABLE] = ITEMS_SCHEMA
        tables = list(carried.items())
        for table, schema in empty.items():
            wanted = table == endpoint.name or table not in self.existing
            if wanted and not read.rows[table] and table not in carried:
                tables.append((table, schema.empty_table()))
        read.finished = time.monotonic()
        marked = self.mark(tables, read)
        with self.lock:
            last = len(self.reads) == len(ENDPOINTS) and all(
                r.finished for r in self.reads.values()
            )
        if last and self.summary:
            marked += self.mark([(STATS_TABLE, self.summary(self))])
        return marked


def _pages(endpoint: Endpoint, run: SourceRun) -> Iterator[Any]:
    checker = Checker(
        endpoint, run.run_id, run.config.max_field_bytes, run.known_hashes, run.suppression
    )
    read = Read(endpoint, checker)
    with run.lock:
        run.reads[endpoint.name] = read
    size, per_task = run.config.page_size, run.config.pages_per_task
    page = run.api.page(endpoint.name, 1, read.counters)
    pages = page.pages if page.pages is not None or page.total is None else -(-page.total // size)
    yield from run.process(read, [page])
    while pages is None and len(page.items) >= size:  # no total: read on to a short page
        page = run.api.page(endpoint.name, page.number + 1, read.counters)
        yield from run.process(read, [page])
    starts = range(2, (pages or 1) + 1, per_task)
    read.tasks = len(starts)
    if not read.tasks:
        yield from run.complete(read)
    for start in starts:
        yield dlt.defer(run.task)(read, range(start, min(start + per_task, pages + 1)))  # type: ignore[operator]


@dlt.source(name="moovitamix", max_table_nesting=0)
def moovitamix_source(run: SourceRun) -> Iterator[Any]:
    """The API's three endpoints as resources; see the module docstring."""
    scd2 = {
        "disposition": "merge",
        "strategy": "scd2",
        "boundary_timestamp": run.boundary,
        "row_version_column_name": RECORD_HASH,
    }
    for endpoint in ENDPOINTS.values():
        resource = dlt.resource(
            _pages(endpoint, run),
            name=endpoint.name,
            write_disposition="append" if run.snapshot else scd2,  # type: ignore[arg-type]
            schema_contract=SCHEMA_CONTRACT,
        )
        for table in (ITEMS_TABLE, REJECTED_TABLE, STATS_TABLE):
            resource.apply_hints(
                table_name=table, write_disposition="append", create_table_variant=True
            )
        yield resource

"""The dlt source of the MooVitamix API: per endpoint (tracks, users, listen_history) one
resource per table it writes, together a complete extract of the endpoint.

The endpoint is read once (whichever of its resources dlt pulls first runs the read): page 1,
then the other pages concurrently (`client`); every record is checked against the contract
(`records`) and the rows are written, a batch at a time, straight into the CSV files the
load COPYs (`csv_files`), which dlt takes as they are (no parquet, nothing left to normalize):

- its records to `raw.<endpoint>`, merged as scd2: a new or changed record is a new version,
  a record absent from the extract is retired (`record_hash` is the row version);
- listen_history's items to `raw.listen_history__items`, one row per element with its position,
  only for versions raw does not hold yet (append);
- rejected records to `raw._rejected` (append).

When the last page is in, the read is checked (`completeness`): records == total, ids unique.
A read that does not add up is read again (`SourceContext.rereads` times), then raises
`ReadMismatch`: the extract fails and its load package is discarded. One run extracts the three
endpoints into one load package, so the load runs their COPYs and merges side by side.

For any other destination (the Parquet lake) the context asks for a snapshot
(`SourceContext.snapshot`): the same reads, checks and limits, but every table is appended,
listen_history's items come for every version served, and the rows go to dlt as Arrow tables
(`arrow_tables`) with `_dlt_load_id` and `_snapshot_at`. A `summary` table (the run's stats)
may join the package once every endpoint is read.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from dlt.common.metrics import DataWriterMetrics
from dlt.extract.extractors import ImportFileMeta
from dlt.extract.items import DataItemWithMeta
from dlt.extract.resource import DltResource

from ingestion.moovitamix_source.arrow_tables import ArrowPart, ArrowTables, snapshot_columns
from ingestion.moovitamix_source.client import ApiClient, Page, RequestCounters
from ingestion.moovitamix_source.completeness import ReadCheck, ReadMismatch
from ingestion.moovitamix_source.contract import (
    ENDPOINTS,
    ITEMS_SCHEMA,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    RECORD_HASH,
    REJECTED_SCHEMA,
    REJECTED_TABLE,
    Endpoint,
    column_hints,
    record_schema,
)
from ingestion.moovitamix_source.csv_files import LOAD_ID, CsvFile, CsvFiles
from ingestion.moovitamix_source.records import (
    DEFAULT_MAX_FIELD_BYTES,
    Batch,
    KnownHashes,
    RecordBuilder,
)

# New tables and columns may appear (schema drift is kept); the type of a column never changes.
SCHEMA_CONTRACT = {"tables": "evolve", "columns": "evolve", "data_type": "freeze"}

LOAD_ID_HINT = {"name": LOAD_ID, "data_type": "text", "nullable": False}

ActiveRows = Callable[[Endpoint, list[int]], pa.Table | None]

log = logging.getLogger(__name__)


@dataclass
class EndpointRead:
    """What reading one endpoint produced; filled in while dlt extracts the resource."""

    endpoint: Endpoint
    builder: RecordBuilder
    counters: RequestCounters = field(default_factory=RequestCounters)
    check: ReadCheck = field(init=False)
    planned_pages: int | None = None
    carried_forward: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # by table: rows in the files dlt loads
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def __post_init__(self) -> None:
        self.check = ReadCheck(self.endpoint.name)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


@dataclass
class SourceContext:
    """What the resources need from the run, and where they report."""

    client: ApiClient
    run_id: str
    boundary: datetime  # scd2 validity boundary of this run (aware, UTC)
    known_hashes: KnownHashes = field(default_factory=KnownHashes)
    active_rows: ActiveRows | None = None  # current raw rows of rejected ids (kept, not retired)
    # snapshot only: the current list items of rejected histories (carried with their rows)
    active_items: Callable[[list[int]], pa.Table | None] | None = None
    on_plan: Callable[[str, int | None], None] | None = None
    on_page: Callable[[str, Page], None] | None = None
    batch_rows: int = 10_000
    batch_items: int = 100_000
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES  # a longer string rejects its record
    files_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    file_rows: int = 500_000  # rows per CSV file: a big table loads as several COPYs
    rereads: int = 1  # more reads of an endpoint whose read does not add up
    after_read: Callable[[EndpointRead], None] | None = None  # may raise: fails the extract
    reads: dict[str, list[EndpointRead]] = field(default_factory=dict)  # every read, in order
    reading: str | None = None  # the endpoint being read (None between reads)
    # A complete snapshot for the lake (every table appended, all items, Arrow tables), not
    # the Postgres load (scd2, items of new versions only, CSV files for COPY).
    snapshot: bool = False
    summary: Callable[[], pa.Table] | None = None  # a table made once every endpoint is read
    summary_table: str = "_ingestion_stats"


def scd2(boundary: datetime) -> dict[str, Any]:
    return {
        "disposition": "merge",
        "strategy": "scd2",
        "row_version_column_name": RECORD_HASH,
        "boundary_timestamp": boundary,
    }


def _write_batch(endpoint: Endpoint, batch: Batch, files: CsvFiles | ArrowTables) -> None:
    if batch.records is not None:
        files.write(endpoint.table, batch.records, tuple(batch.drift_columns))
    if batch.items is not None:
        files.write(ITEMS_TABLE, batch.items)
    if batch.rejected is not None:
        files.write(REJECTED_TABLE, batch.rejected)


def _read_endpoint(
    endpoint: Endpoint, context: SourceContext, files: CsvFiles | ArrowTables
) -> EndpointRead:
    """Read every page of `endpoint`, check it, write its tables' files (CSV or Arrow); raises
    ReadMismatch (or FetchFailed) when the read is not a complete extract."""
    builder = RecordBuilder(
        endpoint,
        run_id=context.run_id,
        # a snapshot holds the items of every version served, known or not
        known_hashes=(
            context.known_hashes if endpoint is LISTEN_HISTORY and not context.snapshot else None
        ),
        batch_rows=context.batch_rows,
        batch_items=context.batch_items,
        max_field_bytes=context.max_field_bytes,
    )
    read = EndpointRead(endpoint, builder)
    context.reads.setdefault(endpoint.name, []).append(read)

    def on_plan(pages: int | None) -> None:
        read.planned_pages = pages
        if context.on_plan:
            context.on_plan(endpoint.name, pages)

    # Arrow writes the CSV without the GIL: in a thread of its own, beside the record checks.
    # One batch is written while the next is built, no more (memory stays bounded).
    with ThreadPoolExecutor(1, thread_name_prefix=f"csv-{endpoint.name}") as writer:
        writing: Future[None] | None = None

        def write(batch: Batch) -> None:
            nonlocal writing
            if writing is not None:
                writing.result()
            writing = writer.submit(_write_batch, endpoint, batch, files)

        for page in context.client.read_pages(endpoint.name, read.counters, on_plan=on_plan):
            keys = builder.add_page(page.number, page.items)
            read.check.add_page(page.number, page.total, keys)
            if context.on_page:
                context.on_page(endpoint.name, page)
            if builder.full:
                write(builder.flush())
        write(builder.flush())
        assert writing is not None
        writing.result()
    read.check.verify()
    # Tables that got no row still get an (empty) file: so they exist for dbt, and an empty
    # complete extract retires every current version, as any absent record is.
    _write_batch(
        endpoint,
        Batch(
            records=record_schema(endpoint).empty_table(),
            items=ITEMS_SCHEMA.empty_table() if endpoint is LISTEN_HISTORY else None,
            rejected=REJECTED_SCHEMA.empty_table(),
        ),
        files,
    )
    # A rejected record is not a deleted one: its current version stays current.
    if builder.rejected_keys and context.active_rows:
        kept = context.active_rows(endpoint, builder.rejected_keys)
        if kept is not None and kept.num_rows:
            read.carried_forward = kept.num_rows
            files.write(endpoint.table, kept)
            if endpoint is LISTEN_HISTORY and context.snapshot and context.active_items:
                items = context.active_items(kept.column(endpoint.key).to_pylist())
                if items is not None:
                    files.write(ITEMS_TABLE, items)
    read.finished = time.monotonic()
    return read


class _EndpointFiles:
    """One read of an endpoint, shared by the resources of its tables: whichever dlt pulls
    first runs the read; each then hands dlt its table's files."""

    def __init__(self, endpoint: Endpoint, context: SourceContext) -> None:
        self.endpoint = endpoint
        self.context = context
        self._files: list[CsvFile] | list[ArrowPart] | None = None

    def read(self) -> list[CsvFile] | list[ArrowPart]:
        """The endpoint's files (or Arrow tables), read on the first call."""
        if self._files is None:
            self._files = self._read()
        return self._files

    def of(self, table: str) -> Iterator[Any]:
        for file in self.read():
            if file.table == table:
                if isinstance(file, ArrowPart):
                    yield from file.batches()
                else:
                    yield _file_import(file)

    def _read(self) -> list[CsvFile] | list[ArrowPart]:
        """Read the endpoint (again, while a read does not add up); its files."""
        context, name = self.context, self.endpoint.name
        load_id = dlt.current.load_package_state()["load_id"]
        directory = context.files_dir / f"{load_id}-{name}"
        first: list[str] = []
        for attempt in range(context.rereads + 1):
            files: CsvFiles | ArrowTables = (
                ArrowTables(directory, load_id, context.boundary)
                if context.snapshot
                else CsvFiles(directory, load_id, context.file_rows)
            )
            context.reading = name
            try:
                read = _read_endpoint(self.endpoint, context, files)
            except ReadMismatch as exc:
                files.discard()
                if attempt == context.rereads:
                    raise ReadMismatch(name, exc.problems, first_read=first) from None
                log.warning("%s: the read does not add up (%s); reading it again",
                            name, "; ".join(exc.problems))  # fmt: skip
                first = first or exc.problems
                continue
            except BaseException:
                files.discard()
                raise
            finally:
                for unfinished in context.reads.get(name, []):
                    unfinished.finished = unfinished.finished or time.monotonic()
            closed = files.close()
            for file in closed:
                read.rows[file.table] = read.rows.get(file.table, 0) + file.rows
            if context.after_read:
                context.after_read(read)
            context.reading = None
            return closed
        raise AssertionError("unreachable")


def _file_import(file: CsvFile) -> DataItemWithMeta:
    """A CSV file for dlt to take as it is, with its Arrow schema (the column types: scd2's
    row version column has its type from the data only) and the hints of its JSON columns."""
    hints = None
    if file.json_columns:
        drift = [{"name": c, "data_type": "json", "nullable": True} for c in file.json_columns]
        hints = dlt.mark.make_hints(columns=drift)  # type: ignore[arg-type]
    path = str(file.path)
    meta = ImportFileMeta(path, DataWriterMetrics(path, file.rows, 0, 0, 0), "csv", hints, False)
    return DataItemWithMeta(meta, file.schema.empty_table())


def _table_resource(
    shared: _EndpointFiles,
    name: str,
    table: str,
    write_disposition: Any,
    schema: pa.Schema,
    *,
    snapshot: bool = False,
) -> DltResource:
    resource = dlt.resource(
        shared.of(table),
        name=name,
        table_name=table,
        write_disposition=write_disposition,
        schema_contract=SCHEMA_CONTRACT,
    )
    # After the write disposition: scd2's row version column keeps its type (text).
    if snapshot:
        resource.apply_hints(columns=column_hints(snapshot_columns(schema)))
    else:
        resource.apply_hints(columns={**column_hints(schema), LOAD_ID: LOAD_ID_HINT})
    return resource


def endpoint_resources(
    endpoint: Endpoint, context: SourceContext, shared: _EndpointFiles | None = None
) -> list[DltResource]:
    """The resources of one endpoint (one per table it writes), with each table's hints."""
    shared = shared or _EndpointFiles(endpoint, context)
    snapshot = context.snapshot
    records = "append" if snapshot else scd2(context.boundary)
    resources = [
        _table_resource(
            shared, endpoint.name, endpoint.table, records, record_schema(endpoint),
            snapshot=snapshot,
        )
    ]  # fmt: skip
    if endpoint is LISTEN_HISTORY:
        resources.append(
            _table_resource(
                shared, ITEMS_TABLE, ITEMS_TABLE, "append", ITEMS_SCHEMA, snapshot=snapshot
            )
        )
    resources.append(
        _table_resource(
            shared,
            f"{endpoint.name}{REJECTED_TABLE}",
            REJECTED_TABLE,
            "append",
            REJECTED_SCHEMA,
            snapshot=snapshot,
        )
    )
    return resources


def _summary(reads: list[_EndpointFiles], context: SourceContext) -> Iterator[pa.Table]:
    """The summary table, made once every endpoint is read (it runs the reads not yet run)."""
    assert context.summary is not None
    for shared in reads:
        shared.read()
    yield context.summary()


@dlt.source(name="moovitamix", max_table_nesting=0)
def moovitamix_source(
    context: SourceContext, endpoints: Sequence[str] = tuple(ENDPOINTS)
) -> Iterator[DltResource]:
    """The API's endpoints (all three by default) as resources; see the module docstring."""
    reads = [_EndpointFiles(ENDPOINTS[name], context) for name in endpoints]
    for shared in reads:
        yield from endpoint_resources(shared.endpoint, context, shared)
    if context.summary is not None:
        yield dlt.resource(
            _summary(reads, context),
            name=context.summary_table,
            table_name=context.summary_table,
            write_disposition="append",
        )

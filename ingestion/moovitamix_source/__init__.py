"""The dlt source of the MooVitamix API: one resource per endpoint (tracks, users,
listen_history), each a complete extract of its endpoint.

A resource reads page 1, then the other pages concurrently (`client`), checks every record
against the contract (`records`), and yields Arrow tables to dlt as it goes:

- its records to `raw.<endpoint>`, merged as scd2: a new or changed record is a new version,
  a record absent from the extract is retired (`record_hash` is the row version);
- listen_history's items to `raw.listen_history__items`, one row per element with its position,
  only for versions raw does not hold yet (append);
- rejected records to `raw._rejected` (append).

When the last page is in, the read is checked (`completeness`): records == total, ids unique.
A mismatch raises `ReadMismatch` so the extract (this resource's load package) is discarded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.resource import DltResource

from ingestion.moovitamix_source.client import ApiClient, Page, RequestCounters
from ingestion.moovitamix_source.completeness import ReadCheck
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
from ingestion.moovitamix_source.records import Batch, KnownHashes, RecordBuilder

# New tables and columns may appear (schema drift is kept); the type of a column never changes.
SCHEMA_CONTRACT = {"tables": "evolve", "columns": "evolve", "data_type": "freeze"}

ActiveRows = Callable[[Endpoint, list[int]], pa.Table | None]


@dataclass
class EndpointRead:
    """What reading one endpoint produced; filled in while dlt extracts the resource."""

    endpoint: Endpoint
    builder: RecordBuilder
    counters: RequestCounters = field(default_factory=RequestCounters)
    check: ReadCheck = field(init=False)
    planned_pages: int | None = None
    carried_forward: int = 0
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
    on_plan: Callable[[str, int | None], None] | None = None
    on_page: Callable[[str, Page], None] | None = None
    batch_rows: int = 10_000
    batch_items: int = 100_000
    reads: dict[str, EndpointRead] = field(default_factory=dict)


def scd2(boundary: datetime) -> dict[str, Any]:
    return {
        "disposition": "merge",
        "strategy": "scd2",
        "row_version_column_name": RECORD_HASH,
        "boundary_timestamp": boundary,
    }


def _dlt_items(endpoint: Endpoint, batch: Batch, sent: set[str]) -> Iterator[Any]:
    """The batch's tables, each marked with the table it goes to (noted in `sent`)."""
    if batch.records is not None:
        sent.add(endpoint.table)
        if batch.drift_columns:
            drift = [
                {"name": c, "data_type": "json", "nullable": True} for c in batch.drift_columns
            ]
            hints = dlt.mark.make_hints(table_name=endpoint.table, columns=drift)
            yield dlt.mark.with_hints(batch.records, hints, create_table_variant=True)
        else:
            yield dlt.mark.with_table_name(batch.records, endpoint.table)
    if batch.items is not None:
        sent.add(ITEMS_TABLE)
        yield dlt.mark.with_table_name(batch.items, ITEMS_TABLE)
    if batch.rejected is not None:
        sent.add(REJECTED_TABLE)
        yield dlt.mark.with_table_name(batch.rejected, REJECTED_TABLE)


def _read_endpoint(endpoint: Endpoint, context: SourceContext) -> Iterator[Any]:
    builder = RecordBuilder(
        endpoint,
        run_id=context.run_id,
        known_hashes=context.known_hashes if endpoint is LISTEN_HISTORY else None,
        batch_rows=context.batch_rows,
        batch_items=context.batch_items,
    )
    read = context.reads[endpoint.name] = EndpointRead(endpoint, builder)

    def on_plan(pages: int | None) -> None:
        read.planned_pages = pages
        if context.on_plan:
            context.on_plan(endpoint.name, pages)

    sent: set[str] = set()
    for page in context.client.read_pages(endpoint.name, read.counters, on_plan=on_plan):
        keys = builder.add_page(page.number, page.items)
        read.check.add_page(page.number, page.total, keys)
        if context.on_page:
            context.on_page(endpoint.name, page)
        if builder.full:
            yield from _dlt_items(endpoint, builder.flush(), sent)
    yield from _dlt_items(endpoint, builder.flush(), sent)
    read.check.verify()
    # Tables that got no row still get an (empty) table: so they exist for dbt, and an empty
    # complete extract retires every current version, as any absent record is.
    empty = Batch(
        records=None if endpoint.table in sent else record_schema(endpoint).empty_table(),
        items=None
        if ITEMS_TABLE in sent or endpoint is not LISTEN_HISTORY
        else ITEMS_SCHEMA.empty_table(),
        rejected=None if REJECTED_TABLE in sent else REJECTED_SCHEMA.empty_table(),
    )
    yield from _dlt_items(endpoint, empty, sent)
    # A rejected record is not a deleted one: its current version stays current.
    if builder.rejected_keys and context.active_rows:
        kept = context.active_rows(endpoint, builder.rejected_keys)
        if kept is not None and kept.num_rows:
            read.carried_forward = kept.num_rows
            yield dlt.mark.with_table_name(kept, endpoint.table)
    read.finished = time.monotonic()


def endpoint_resource(endpoint: Endpoint, context: SourceContext) -> DltResource:
    """The resource of one endpoint, with the hints of each table it writes."""
    resource = dlt.resource(_read_endpoint(endpoint, context), name=endpoint.name)
    resource.apply_hints(
        table_name=endpoint.table,
        write_disposition=scd2(context.boundary),
        columns=column_hints(record_schema(endpoint)),
        schema_contract=SCHEMA_CONTRACT,
        create_table_variant=True,
    )
    resource.apply_hints(
        table_name=REJECTED_TABLE,
        write_disposition="append",
        columns=column_hints(REJECTED_SCHEMA),
        schema_contract=SCHEMA_CONTRACT,
        create_table_variant=True,
    )
    if endpoint is LISTEN_HISTORY:
        resource.apply_hints(
            table_name=ITEMS_TABLE,
            write_disposition="append",
            columns=column_hints(ITEMS_SCHEMA),
            schema_contract=SCHEMA_CONTRACT,
            create_table_variant=True,
        )
    return resource


@dlt.source(name="moovitamix", max_table_nesting=0)
def moovitamix_source(
    context: SourceContext, endpoints: Sequence[str] = tuple(ENDPOINTS)
) -> Iterator[DltResource]:
    """The API's endpoints (all three by default) as resources; see the module docstring."""
    for name in endpoints:
        yield endpoint_resource(ENDPOINTS[name], context)

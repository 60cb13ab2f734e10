"""The ingestion run: the MooVitamix source -> dlt -> a destination chosen by configuration.

- `postgres` (default): schema raw of the warehouse; records merged as scd2 (history with
  deletions), items of new versions only, rejects appended.
- `filesystem`: the Parquet lake; each run appends a complete, immutable snapshot under its
  load id (dlt cannot merge plain Parquet: history is derived downstream).

A run: take the warehouse's ingestion lock; load what an earlier run left normalized, drop what
it only extracted (dlt's pipeline API); extract the three endpoints into one load package (a
read that does not add up is read again, then fails the run); normalize; load; write one
`monitoring.ingestion_stats` row per endpoint. A run that fails before its load leaves the
destination as it was.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import dlt
import psycopg
from dlt.pipeline.exceptions import PipelineStepFailed

from ingestion import raw_tables
from ingestion.config import IngestionConfig
from ingestion.console import page_progress
from ingestion.lake_current import LakeCurrent
from ingestion.moovitamix_source import (
    Read,
    ReadMismatch,
    SourceRun,
    TooManyRejects,
    moovitamix_source,
)
from ingestion.moovitamix_source.contract import ENDPOINTS, ITEMS_TABLE, LISTEN_HISTORY
from ingestion.moovitamix_source.http import Api, FetchFailed
from ingestion.raw_tables import RAW, IngestionLocked, TableChange, try_lock
from ingestion.stats import EndpointStats, stats_table, write_stats
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.roles import LOADER, as_role
from moovitamix.settings import Settings, apply_offline_defaults
from moovitamix.warehouse import WarehouseUnreachable, connect, open_warehouse

log = logging.getLogger(__name__)

PIPELINE_NAME = "moovitamix"
DESTINATIONS = ("postgres", "filesystem")
LAKE_LAYOUT = "{table_name}/load_id={load_id}/{file_id}.{ext}"  # hive-style: prune by load
BUCKET_URL_CONFIG = "destination.filesystem.bucket_url"  # env DESTINATION__FILESYSTEM__BUCKET_URL
LOADER_WORK_MEM = "256MB"


class IngestionFailed(RuntimeError):
    """The run failed; the message is one line. `endpoint` names the endpoint at fault (None:
    the run as a whole), `stats` holds what was measured until then."""

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.stats: dict[str, EndpointStats] = {}


class IngestionAlreadyRunning(IngestionFailed):
    """Another ingestion holds the lock on this warehouse."""


@dataclass
class IngestionResult:
    run_id: str
    api_url: str
    endpoints: dict[str, EndpointStats]
    tables: dict[str, TableChange]
    load_ids: dict[str, str]
    seconds: float
    boundary: datetime  # the scd2 validity boundary (the lake: `_snapshot_at`) of this run
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step of the run
    destination: str | None = None  # None: schema raw; else the lake's URL

    @property
    def records(self) -> int:
        return sum(s.records for s in self.endpoints.values())

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.endpoints.values())

    @property
    def items_added(self) -> int:
        change = self.tables.get(ITEMS_TABLE)
        return change.added if change else 0


def lake_bucket_url(settings: Settings, bucket_url: str | None = None) -> str:
    """`bucket_url`, else dlt's own config (DESTINATION__FILESYSTEM__BUCKET_URL or
    .dlt/config.toml), else Settings.lake (LAKE_URL, default data_dir/lake)."""
    configured = bucket_url or dlt.config.get(BUCKET_URL_CONFIG, str)
    if configured and not bucket_url and str(configured) != settings.lake:
        log.warning(
            "loading the lake at %s (dlt's %s), not at %s: the Spark engine's dbt reads LAKE_URL",
            configured,
            BUCKET_URL_CONFIG,
            settings.lake,
        )
    return str(configured or settings.lake)


def make_pipeline(
    settings: Settings, warehouse: ConnectionURL, bucket_url: str | None = None
) -> dlt.Pipeline:
    """The dlt pipeline into schema raw, or into the lake at `bucket_url`; its working dir is
    under the data dir (never ~/.dlt), one per destination."""
    apply_offline_defaults()
    where = bucket_url or f"{warehouse.host}:{warehouse.port}/{warehouse.database}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:12]
    for key, value in {
        "data_writer.disable_compression": True,  # files live minutes: gzip costs more
        # extract's Parquet: rewritten to CSV for Postgres; the lake's files as they are
        "data_writer.compression": "snappy" if bucket_url else "none",
        "load.delete_completed_jobs": True,  # loaded files go (~80 bytes per item row a day)
        "load.truncate_staging_dataset": True,
    }.items():
        dlt.config[key] = value
    if bucket_url:
        destination: Any = dlt.destinations.filesystem(bucket_url=bucket_url, layout=LAKE_LAYOUT)
    else:  # a session work_mem keeps dlt's scd2 `NOT IN (current hashes)` hashed in memory
        loader = as_role(warehouse, LOADER)  # dlt owns what it creates in raw as the loader
        options = dict(loader.options)
        options["options"] = f"{options.get('options', '')} -c work_mem={LOADER_WORK_MEM}".strip()
        url = replace(loader, options=tuple(options.items())).url()
        destination = dlt.destinations.postgres(credentials=url)
    pipeline = dlt.pipeline(
        pipeline_name=f"{PIPELINE_NAME}_lake" if bucket_url else PIPELINE_NAME,
        pipelines_dir=str(settings.data_dir / "dlt" / (f"lake-{digest}" if bucket_url else digest)),
        destination=destination,
        dataset_name=RAW,
    )
    logger = logging.getLogger("dlt")  # dlt's messages go to our handlers, not its own
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    return pipeline


def _finish_pending(pipeline: dlt.Pipeline) -> None:
    """Load what an earlier run normalized but did not finish loading; drop what it only
    extracted (a run that never got to its load is a failed run: it must leave nothing)."""
    if pending := pipeline.list_normalized_load_packages():
        log.warning(
            "an earlier run left load package(s) %s not fully loaded: loading them first",
            ", ".join(pending),
        )
        pipeline.load().raise_on_failed_jobs()
    if pipeline.has_pending_data:
        log.info("dropping extracted packages of an earlier failed run")
        pipeline.abort_packages()


def _discard(pipeline: dlt.Pipeline) -> None:
    """Drop what the failed run extracted (a normalized package stays: the next run loads it)."""
    try:
        if pipeline.list_extracted_load_packages() and not pipeline.list_normalized_load_packages():
            pipeline.abort_packages()
    except Exception:  # the failure being reported matters more
        log.exception("could not discard the run's load packages")


def failure_cause(exc: BaseException) -> BaseException:
    """The exception that made a dlt step fail (dlt wraps it, sometimes twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FetchFailed | ReadMismatch | TooManyRejects):
            return current
        current = getattr(current, "exception", None) or current.__cause__
    return exc if current is None else current


def endpoint_stats(
    run_id: str,
    reads: list[Read],
    status: str,
    error: str | None = None,
    started_at: datetime | None = None,
) -> EndpointStats:
    """The monitoring row of an endpoint from its reads (the last one is the one kept)."""
    last = reads[-1]
    s = EndpointStats(
        run_id=run_id,
        endpoint=last.endpoint.name,
        status=status,
        error=error,
        started_at=started_at or datetime.now(UTC),
        finished_at=datetime.now(UTC),
        rereads=len(reads) - 1,
        api_total=last.check.total,
        pages=last.counters.pages,
        records=last.check.received,
        rejected=last.checker.rejected,
        new_fields=dict(last.checker.drift),
        rejected_by_reason=Counter(last.checker.rejected_by_reason),
        carried_forward=last.carried_forward,
    )
    for read in reads:
        s.requests += read.counters.requests
        s.bytes += read.counters.bytes
        s.retries.update(read.counters.retries)
        s.http_errors.update(read.counters.http_errors)
        s.seconds += read.seconds
    return s


@contextmanager
def warehouse_session(url: ConnectionURL) -> Iterator[psycopg.Connection]:
    with connect(url, autocommit=True) as conn:
        try:
            try_lock(conn)
        except IngestionLocked as exc:
            raise IngestionAlreadyRunning(str(exc)) from None
        yield conn


def _failure(cause: BaseException, step: str, where: str) -> IngestionFailed:
    if isinstance(cause, FetchFailed | TooManyRejects | ReadMismatch):
        return IngestionFailed(str(cause), cause.endpoint)
    if step == "load":
        return IngestionFailed(
            f"loading into {where} failed: {one_line(cause)} "
            "(the package stays pending: the next run loads it first)"
        )
    table = getattr(cause, "table_name", None)  # a schema contract violation names its table
    endpoint = (
        LISTEN_HISTORY.name if table == ITEMS_TABLE else table if table in ENDPOINTS else None
    )
    return IngestionFailed(
        f"{f'{endpoint}: ' if endpoint else ''}{step} failed: {one_line(cause)}", endpoint
    )


def run_ingestion(
    settings: Settings,
    run_id: str,
    *,
    api_url: str | None = None,
    config: IngestionConfig | None = None,
    destination: str = "postgres",
    bucket_url: str | None = None,
) -> IngestionResult:
    """Ingest the API at `api_url` (default: settings.api_url) into `destination`.

    Raises WarehouseUnreachable (the warehouse, which holds the lock and the stats, is down) or
    IngestionFailed (anything else); both carry a one-line message.
    """
    config = config or IngestionConfig()
    api_url = api_url or settings.api_url
    if not api_url:
        raise IngestionFailed("no API URL: set MOOVITAMIX_API_URL (or pass --api-url)")
    lake = lake_bucket_url(settings, bucket_url) if destination == "filesystem" else None
    started, boundary, started_at = time.monotonic(), datetime.now(UTC), datetime.now(UTC)
    steps: dict[str, float] = {}
    warehouse = open_warehouse(settings)
    where = f"the lake {lake}" if lake else f"{warehouse.masked} (schema {RAW})"
    log.info("ingesting %s into %s, run %s", api_url, where, run_id)
    reads: dict[str, list[Read]] = {}
    first_read = ""
    api = Api(api_url, config)
    dlt.config["extract.workers"] = config.concurrency
    dlt.config["extract.max_parallel_items"] = 2 * config.concurrency

    def stats(status: str, failure: IngestionFailed | None = None) -> dict[str, EndpointStats]:
        out = {}
        for name, rs in reads.items():
            at_fault = failure is not None and failure.endpoint in (None, name)
            out[name] = endpoint_stats(
                run_id,
                rs,
                "failed" if at_fault else status,
                str(failure) if at_fault else None,
                started_at,
            )
        return out

    def summary(run: SourceRun) -> Any:
        load_id = dlt.current.load_package_state()["load_id"]
        rows = [
            endpoint_stats(run_id, [*reads.get(name, []), read], "loaded", None, started_at)
            for name, read in run.reads.items()
        ]
        for s in rows:
            s.load_id = load_id
            s.versions_added = run.reads[s.endpoint].rows[ENDPOINTS[s.endpoint].table]
            if s.endpoint == LISTEN_HISTORY.name:
                s.items_added = run.reads[s.endpoint].rows[ITEMS_TABLE]
        return stats_table(rows)

    step = time.monotonic()
    with warehouse_session(as_role(warehouse, LOADER)) as conn:
        pipeline = make_pipeline(settings, warehouse, lake)
        try:
            _finish_pending(pipeline)
            current = LakeCurrent(lake) if lake else None
            known = None if lake else raw_tables.known_history_hashes(conn)
            steps["prepare"] = time.monotonic() - step
            for attempt in range(config.rereads + 1):
                step = time.monotonic()
                run = SourceRun(
                    api,
                    config,
                    run_id,
                    boundary,
                    snapshot=bool(lake),
                    known_hashes=known,
                    carry=current.carry if current else raw_tables.carry(conn),
                    summary=summary if lake else None,
                )
                try:
                    with page_progress(config.progress) as progress:
                        run.on_plan, run.on_page = progress.on_plan, progress.on_page
                        info = pipeline.extract(
                            moovitamix_source(run), loader_file_format="parquet" if lake else "csv"
                        )
                    break
                except PipelineStepFailed as exc:
                    cause = failure_cause(exc)
                    if not isinstance(cause, ReadMismatch) or attempt == config.rereads:
                        raise
                    _discard(pipeline)
                    log.warning("%s; reading again", cause)
                    first_read = "; ".join(cause.problems)
                finally:
                    for name, read in run.reads.items():
                        reads.setdefault(name, []).append(read)
            steps["extract"] = time.monotonic() - step
            step = time.monotonic()
            pipeline.normalize()
            steps["normalize"] = time.monotonic() - step
            step = time.monotonic()
            pipeline.load().raise_on_failed_jobs()
            steps["load"] = time.monotonic() - step
        except PipelineStepFailed as exc:
            _discard(pipeline)
            cause = failure_cause(exc)
            failure = _failure(cause, exc.step, where)
            if isinstance(cause, ReadMismatch):
                n = len(reads[cause.endpoint])
                failure = IngestionFailed(
                    f"{cause.endpoint}: incomplete read after {n} reads: "
                    f"{'; '.join(cause.problems)}{f' (first read: {first_read})' if n > 1 else ''}",
                    cause.endpoint,
                )
            _record_failure(conn, stats("discarded", failure), failure)
            raise failure from None
        except psycopg.Error as exc:  # the warehouse went away during the run
            _discard(pipeline)
            raise IngestionFailed(f"warehouse error: {one_line(exc)}") from exc

        step = time.monotonic()
        load_id = info.loads_ids[-1]
        rows = {name: rs[-1].rows for name, rs in reads.items()}
        appended = sum(
            (Counter({t: n for t, n in r.items() if t not in ENDPOINTS}) for r in rows.values()),
            Counter(),
        )
        if lake:
            tables = {
                t: TableChange(t, n) for r in rows.values() for t, n in r.items() if t in ENDPOINTS
            } | {t: TableChange(t, n) for t, n in appended.items()}
        else:
            tables = raw_tables.table_changes(conn, [load_id], boundary, appended)
        result = stats("loaded")
        for name, s in result.items():
            s.load_id = load_id
            change = tables.get(name)
            if change is not None:
                s.versions_added, s.versions_retired = change.added, change.retired
            if name == LISTEN_HISTORY.name and ITEMS_TABLE in tables:
                s.items_added = tables[ITEMS_TABLE].added
        write_stats(conn, list(result.values()))
        steps["report"] = time.monotonic() - step
    log.info("steps: %s", ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    return IngestionResult(
        run_id=run_id,
        api_url=api_url,
        endpoints=result,
        tables=tables,
        load_ids={name: load_id for name in result},
        seconds=time.monotonic() - started,
        boundary=boundary,
        steps={k: round(v, 2) for k, v in steps.items()},
        destination=lake,
    )


def _record_failure(
    conn: psycopg.Connection, stats: dict[str, EndpointStats], exc: IngestionFailed
) -> None:
    exc.stats = stats
    try:
        write_stats(conn, list(stats.values()))
    except (psycopg.Error, WarehouseUnreachable) as write_exc:
        log.warning("could not write monitoring.ingestion_stats: %s", one_line(write_exc))

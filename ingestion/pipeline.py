"""The ingestion run: the MooVitamix source -> dlt -> `postgres`, `duckdb` (schema raw, scd2) or
`filesystem` (the lake: a snapshot per run); recovery and failures as README.md says."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dlt
import psycopg
from dlt.destinations.exceptions import DatabaseException
from dlt.pipeline.exceptions import PipelineStepFailed

from ingestion import IngestionFailed, raw_tables
from ingestion.config import IngestionConfig
from ingestion.lake import lake_destination, stats_summary
from ingestion.moovitamix_source import (
    Read,
    ReadMismatch,
    SourceRun,
    moovitamix_source,
)
from ingestion.moovitamix_source.contract import ITEMS_TABLE
from ingestion.moovitamix_source.http import Api, EndpointFailed
from ingestion.raw_tables import RAW, TableChange
from ingestion.stats import EndpointStats, endpoint_stats, write_stats
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.logins import open_logins
from moovitamix.roles import LOADER, as_role
from moovitamix.settings import Settings, apply_offline_defaults
from moovitamix.warehouse import WarehouseUnreachable, connect
from privacy.subjects import load_suppression

log = logging.getLogger(__name__)

DUCKDB_CONFIG = "destination.duckdb.credentials"
EMPTY_FORMAT = {"postgres": "csv"}  # dlt's ADBC Parquet load fails on a file without rows
# dlt's scd2 merge is `NOT IN (current hashes)`: hashed within work_mem, quadratic beyond it
LOADER_SETTINGS = {"work_mem": "256MB"}  # in the URL: a URL's options override PGOPTIONS


@dataclass
class IngestionResult:
    run_id: str
    endpoints: dict[str, EndpointStats]
    tables: dict[str, TableChange]
    load_ids: dict[str, str]
    seconds: float
    boundary: datetime  # the scd2 validity boundary (the lake: `_snapshot_at`) of this run
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step of the run
    destination: str | None = None  # None: the warehouse's raw; else the lake's URL, DuckDB file

    @property
    def records(self) -> int:
        return sum(s.records for s in self.endpoints.values())

    @property
    def rejected(self) -> int:
        return sum(s.rejected for s in self.endpoints.values())

    @property
    def items_added(self) -> int:
        return self.tables[ITEMS_TABLE].added if ITEMS_TABLE in self.tables else 0


def make_pipeline(
    settings: Settings,
    warehouse: ConnectionURL,
    config: IngestionConfig,
    kind: str,
    bucket_url: str | None = None,
) -> tuple[dlt.Pipeline, str]:
    """The dlt pipeline into destination `kind`, and where that is: the lake's URL, the DuckDB
    file (dlt's DESTINATION__DUCKDB__CREDENTIALS, else in the data dir) or the warehouse's
    database. Its working dir is under the data dir (never ~/.dlt), one per place; progress
    bars are dlt's (tqdm)."""
    apply_offline_defaults()
    for key, value in {
        "extract.workers": config.concurrency,
        "extract.max_parallel_items": 2 * config.concurrency,
        "data_writer.disable_compression": True,  # files live minutes: gzip costs more
        # the lake keeps extract's Parquet as it is; elsewhere it lives minutes
        "data_writer.compression": "snappy" if kind == "filesystem" else "none",
        "load.delete_completed_jobs": True,  # loaded files go (~80 bytes per item row a day)
        "load.truncate_staging_dataset": True,
        # memory stays bounded at scale: a load job streams one file, and few run at once
        "data_writer.file_max_items": 100_000,
        "load.workers": 2,
    }.items():
        dlt.config[key] = value
    if kind == "filesystem":
        destination, where = lake_destination(settings, bucket_url)
    elif kind == "duckdb":
        where = str(dlt.config.get(DUCKDB_CONFIG, str) or settings.data_dir / "moovitamix.duckdb")
        destination = dlt.destinations.duckdb(credentials=where)
    else:  # dlt loads as the loader role: it owns what it creates in raw
        loader = as_role(warehouse, LOADER, **LOADER_SETTINGS)
        destination = dlt.destinations.postgres(credentials=loader.url())
        where = f"{warehouse.host}:{warehouse.port}/{warehouse.database}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:12]
    prefix = {"postgres": "", "filesystem": "lake-", "duckdb": "duckdb-"}[kind]
    show = sys.stderr.isatty() if config.progress is None else config.progress
    pipeline = dlt.pipeline(
        pipeline_name="moovitamix_lake" if kind == "filesystem" else "moovitamix",
        pipelines_dir=str(settings.data_dir / "dlt" / f"{prefix}{digest}"),
        destination=destination,
        dataset_name=RAW,
        progress="tqdm" if show else None,  # type: ignore[arg-type]
    )
    logger = logging.getLogger("dlt")  # dlt's messages go to our handlers, not its own
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    return pipeline, where


def _finish_pending(pipeline: dlt.Pipeline) -> None:
    """Load what an earlier run normalized but did not finish loading; drop what it only
    extracted (a run that never got to its load is a failed run: it must leave nothing)."""
    if pending := pipeline.list_normalized_load_packages():
        packages = ", ".join(pending)
        log.warning(
            "an earlier run left load package(s) %s not fully loaded: loading them first", packages
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
    """The EndpointFailed that made a dlt step fail (dlt wraps it, sometimes twice), else `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current and id(current) not in seen and not isinstance(current, EndpointFailed):
        seen.add(id(current))
        current = getattr(current, "exception", None) or current.__cause__
    return current or exc


def _failure(exc: PipelineStepFailed, where: str, reads: dict[str, list[Read]]) -> IngestionFailed:
    cause = failure_cause(exc)
    if isinstance(cause, ReadMismatch):
        rs, problems = reads[cause.endpoint], "; ".join(cause.problems)
        first = f" (first read: {'; '.join(rs[0].check.problems())})" if len(rs) > 1 else ""
        message = f"{cause.endpoint}: incomplete read after {len(rs)} reads: {problems}{first}"
        return IngestionFailed(message, cause.endpoint)
    if isinstance(cause, EndpointFailed):
        return IngestionFailed(str(cause), cause.endpoint)
    if exc.step == "load":
        pending = "the package stays pending: the next run loads it first"
        return IngestionFailed(f"loading into {where} failed: {one_line(exc)} ({pending})")
    return IngestionFailed(f"{exc.step} failed: {one_line(exc)}")


def run_ingestion(
    settings: Settings,
    run_id: str,
    *,
    api_url: str | None = None,
    config: IngestionConfig | None = None,
    warehouse: ConnectionURL | None = None,
    destination: str = "postgres",
    bucket_url: str | None = None,
) -> IngestionResult:
    """Ingest the API at `api_url` (default: settings.api_url) into `destination`; `warehouse`
    (the daily run's, else opened here) holds the lock and the stats."""
    config = config or IngestionConfig()
    api_url = api_url or settings.api_url
    if not api_url:
        raise IngestionFailed("no API URL: set MOOVITAMIX_API_URL (or pass --api-url)")
    started, boundary = time.monotonic(), datetime.now(UTC)
    warehouse = warehouse or open_logins(settings).url(LOADER)
    reads: dict[str, list[Read]] = {}
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        steps[name] = round(time.monotonic() - since, 2)
        return time.monotonic()

    at = time.monotonic()
    with (
        connect(as_role(warehouse, LOADER), autocommit=True) as conn,
        raw_tables.locked(conn),
        ExitStack() as stack,
    ):
        pipeline, place = make_pipeline(settings, warehouse, config, destination, bucket_url)
        lake = place if destination == "filesystem" else None
        where = {"postgres": f"{warehouse.masked} (schema {RAW})", "filesystem": f"the lake {lake}"}
        where = where.get(destination, f"DuckDB {place} (schema {RAW})")
        log.info("ingesting %s into %s, run %s", api_url, where, run_id)
        try:
            _finish_pending(pipeline)
            client = stack.enter_context(pipeline.sql_client())
            carry = raw_tables.carry(client, snapshot=bool(lake))
            known = None if lake else raw_tables.known_history_hashes(client)
            existing = set() if lake else raw_tables.existing(client)
            suppression = load_suppression(conn)  # erased users: never stored again
            at = step("prepare", at)
            for attempt in range(config.rereads + 1):
                run = SourceRun(
                    Api(api_url, config),
                    config,
                    run_id,
                    boundary,
                    snapshot=bool(lake),
                    known_hashes=known,
                    carry=carry,
                    summary=stats_summary(reads) if lake else None,
                    existing=existing,
                    empty_format=EMPTY_FORMAT.get(destination),
                    suppression=suppression,
                )
                try:
                    info = pipeline.extract(moovitamix_source(run), loader_file_format="parquet")
                    break
                except PipelineStepFailed as exc:
                    cause = failure_cause(exc)
                    if not isinstance(cause, ReadMismatch) or attempt == config.rereads:
                        raise
                    _discard(pipeline)
                    log.warning("%s; reading again", cause)
                finally:
                    for name, read in run.reads.items():
                        reads.setdefault(name, []).append(read)
            stack.close()
            at = step("extract", at)
            pipeline.normalize()
            at = step("normalize", at)
            pipeline.load().raise_on_failed_jobs()
            at = step("load", at)
            if destination == "postgres":
                raw_tables.ensure_indexes(conn)
                at = step("index", at)
        except (PipelineStepFailed, psycopg.Error, DatabaseException) as exc:
            _discard(pipeline)
            if not isinstance(exc, PipelineStepFailed):  # the warehouse went away
                raise IngestionFailed(f"warehouse error: {one_line(exc)}") from exc
            failure = _failure(exc, where, reads)
            failure.stats = endpoint_stats(run_id, reads, boundary, failure)
            try:
                write_stats(conn, list(failure.stats.values()))
            except (psycopg.Error, WarehouseUnreachable) as write_exc:
                log.warning("could not write monitoring.ingestion_stats: %s", one_line(write_exc))
            raise failure from None

        load_id = info.loads_ids[-1]
        tables = raw_tables.appended(rs[-1] for rs in reads.values())
        if not lake:
            tables = raw_tables.table_changes(pipeline, load_id, boundary, tables)
        result = endpoint_stats(run_id, reads, boundary, tables=tables, load_id=load_id)
        write_stats(conn, list(result.values()))
        step("report", at)
    log.info("steps: %s", ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    return IngestionResult(
        run_id,
        result,
        tables,
        dict.fromkeys(result, load_id),
        time.monotonic() - started,
        boundary,
        steps,
        None if destination == "postgres" else place,
    )

"""The ingestion run: the MooVitamix source -> dlt -> schema raw of the warehouse.

One run = a complete extract of the three endpoints, one at a time (pages concurrently):

1. open the warehouse (one clear line if it is down), take the ingestion lock, finish a load
   an earlier run left half done, read the listen_history versions raw already holds;
2. extract the three endpoints into one dlt load package; a read that does not add up is
   read once more, then fails the run; a share of rejected records above the limit fails it
   too, as soon as that endpoint is read;
3. only when all three are in: normalize (takes the source's CSV files as they are) and load:
   the COPYs of the CSV files, side by side, then the scd2 merges;
4. write one monitoring.ingestion_stats row per endpoint.

A run that fails before step 3 discards its packages: nothing of it reaches raw.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import dlt
import httpx
import psycopg
from dlt.common.pipeline import LoadInfo
from dlt.common.schema.exceptions import DataValidationError
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.pipeline.pipeline import Pipeline

from ingestion.config import IngestionConfig
from ingestion.console import page_progress
from ingestion.moovitamix_source import EndpointRead, SourceContext, moovitamix_source
from ingestion.moovitamix_source.client import ApiClient, FetchFailed
from ingestion.moovitamix_source.completeness import ReadMismatch
from ingestion.moovitamix_source.contract import (
    ENDPOINTS,
    ITEMS_TABLE,
    LISTEN_HISTORY,
    REJECTED_TABLE,
)
from ingestion.raw_tables import (
    RAW,
    IngestionLocked,
    TableChange,
    active_rows,
    known_history_hashes,
    table_changes,
    try_lock,
)
from ingestion.stats import EndpointStats, write_stats
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import LOADER, as_role
from moovitamix.settings import Settings, apply_offline_defaults
from moovitamix.warehouse import WarehouseUnreachable, connect, open_warehouse

log = logging.getLogger(__name__)

PIPELINE_NAME = "moovitamix"
LOADER_FILE_FORMAT = "csv"  # Postgres loads CSV with COPY
LOAD_FILE_ROWS = 500_000
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
    boundary: datetime  # the scd2 validity boundary of this run's versions
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step of the run
    destination: str | None = None  # where it loaded: None for schema raw, else the lake's URL

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


# ---- dlt ---------------------------------------------------------------------------------------


def route_dlt_logs() -> None:
    """dlt's messages through our handlers (console and run log), not dlt's own stderr one."""
    logger = logging.getLogger("dlt")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def loader_url(warehouse: ConnectionURL) -> str:
    """The URL dlt loads with. Its scd2 merge finds new versions with `NOT IN (current hashes)`,
    which Postgres hashes only while they fit in work_mem, else compares row by row (quadratic):
    a session work_mem of LOADER_WORK_MEM keeps ~3M current versions hashed."""
    options = dict(warehouse.options)
    setting = f"-c work_mem={LOADER_WORK_MEM}"
    options["options"] = f"{options['options']} {setting}" if "options" in options else setting
    return replace(warehouse, options=tuple(options.items())).url()


def pipelines_dir(settings: Settings, warehouse: ConnectionURL) -> Path:
    """dlt's working dir (state, pending packages) belongs to one warehouse: pointing the same
    data dir at another WAREHOUSE_URL must not reuse the state of the first."""
    where = f"{warehouse.host}:{warehouse.port}/{warehouse.database}"
    return settings.data_dir / "dlt" / hashlib.sha256(where.encode()).hexdigest()[:12]


def make_pipeline(settings: Settings, warehouse: ConnectionURL) -> Pipeline:
    """The dlt pipeline into schema raw; its working dir is under the data dir, never ~/.dlt."""
    apply_offline_defaults()
    # The source writes the CSV files the load COPYs (with _dlt_id and _dlt_load_id) and
    # hands them to dlt as they are: no parquet in extract, nothing to rewrite in normalize.
    # Loaded files are deleted (~80 bytes per item row a day otherwise), staging emptied.
    dlt.config["load.delete_completed_jobs"] = True
    dlt.config["load.truncate_staging_dataset"] = True
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(pipelines_dir(settings, warehouse)),
        # dlt connects as the loader role (moovitamix/roles.py): it owns what it creates in raw
        destination=dlt.destinations.postgres(credentials=loader_url(as_role(warehouse, LOADER))),
        dataset_name=RAW,
    )
    route_dlt_logs()
    return pipeline


def _finish_pending(pipeline: Pipeline) -> None:
    """Load what an earlier run normalized but did not finish loading; drop what it only
    extracted (a run that never got to its load is a failed run: it must leave nothing)."""
    _drop_unfinished_extracts(Path(pipeline.working_dir))
    if pipeline.list_normalized_load_packages():
        log.warning(
            "an earlier run left load package(s) %s not fully loaded: loading them first",
            ", ".join(pipeline.list_normalized_load_packages()),
        )
        pipeline.load().raise_on_failed_jobs()
    if pipeline.list_extracted_load_packages():
        log.info("dropping extracted packages of an earlier failed run")
        pipeline.abort_packages()


def _drop_unfinished_extracts(working_dir: Path, *, quiet: bool = False) -> None:
    """Delete what a killed or failed run was extracting: dlt builds a package in a folder of
    its own under normalize/ (moved to normalize/extracted when complete), our CSV files go
    under csv/. Runs are serialized by the ingestion lock: none of these belongs to a live run."""
    normalize = working_dir / "normalize"
    unfinished = [d for d in normalize.glob("*") if d.is_dir() and d.name != "extracted"]
    leftovers = [d for d in unfinished if any(d.iterdir())]
    if leftovers and not quiet:
        log.info(
            "dropping the unfinished extract of an earlier failed run (%s)",
            ", ".join(d.name for d in leftovers),
        )
    for directory in [*unfinished, working_dir / "csv"]:
        shutil.rmtree(directory, ignore_errors=True)


def _discard_packages(pipeline: Pipeline) -> None:
    """Drop what the failed run extracted (a package it normalized stays: the next run loads
    it), and the package a failed extract left half built."""
    try:
        if pipeline.list_extracted_load_packages() and not pipeline.list_normalized_load_packages():
            pipeline.abort_packages()
        _drop_unfinished_extracts(Path(pipeline.working_dir), quiet=True)
    except Exception:  # the failure being reported matters more
        log.exception("could not discard the run's load packages")


def failure_cause(exc: BaseException) -> BaseException:
    """The exception that made a dlt step fail (dlt wraps it, sometimes twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FetchFailed | ReadMismatch | DataValidationError | IngestionFailed):
            return current
        inner = getattr(current, "exception", None) or current.__cause__
        if inner is None:
            break
        current = inner
    return current or exc


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# ---- one endpoint --------------------------------------------------------------------------


@dataclass
class EndpointRun:
    name: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reads: list[EndpointRead] = field(default_factory=list)
    load_id: str | None = None

    @property
    def last(self) -> EndpointRead | None:
        return self.reads[-1] if self.reads else None

    def stats(self, run_id: str, status: str, error: str | None = None) -> EndpointStats:
        last = self.last
        s = EndpointStats(
            run_id=run_id,
            endpoint=self.name,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            status=status,
            load_id=self.load_id if status == "loaded" else None,
            rereads=max(0, len(self.reads) - 1),
            error=error,
        )
        for read in self.reads:
            s.requests += read.counters.requests
            s.bytes += read.counters.bytes
            s.retries.update(read.counters.retries)
            s.http_errors.update(read.counters.http_errors)
            s.seconds += read.seconds
        if last is not None:
            s.api_total = last.check.total
            s.pages = last.counters.pages
            s.records = last.check.received
            s.rejected = last.builder.rejected
            s.rejected_by_reason = Counter(last.builder.rejected_by_reason)
            s.new_fields = {d.field: d.column for d in last.builder.drift.values()}
            s.carried_forward = last.carried_forward
        return s


def extract_endpoints(
    pipeline: Pipeline,
    context: SourceContext,
    runs: dict[str, EndpointRun],
    loader_file_format: Any = LOADER_FILE_FORMAT,
) -> None:
    """Extract the three endpoints into one load package (the source re-reads an endpoint
    that does not add up); a failure raises IngestionFailed naming the endpoint at fault."""
    try:
        try:
            info = pipeline.extract(
                moovitamix_source(context), loader_file_format=loader_file_format
            )
        finally:  # dlt holds its own links to the files it took
            shutil.rmtree(context.files_dir, ignore_errors=True)
            for name, reads in context.reads.items():
                runs[name].reads = reads
    except PipelineStepFailed as exc:
        cause = failure_cause(exc)
        if isinstance(cause, IngestionFailed):
            raise cause from None
        if isinstance(cause, ReadMismatch):
            first = f" (first read: {'; '.join(cause.first_read)})" if cause.first_read else ""
            raise IngestionFailed(
                f"{cause.endpoint}: incomplete read after {len(runs[cause.endpoint].reads)} "
                f"reads: {'; '.join(cause.problems)}{first}",
                cause.endpoint,
            ) from None
        if isinstance(cause, FetchFailed):
            raise IngestionFailed(str(cause), cause.endpoint) from None
        # The endpoint being read, else the one whose table or resource dlt was handling
        endpoint = context.reading or _endpoint_of(getattr(exc.exception, "pipe_name", None))
        if isinstance(cause, DataValidationError):
            endpoint = _endpoint_of(cause.table_name) or endpoint
            what = "schema contract of raw violated"
        else:
            what = "extract failed"
        prefix = f"{endpoint}: " if endpoint else ""
        raise IngestionFailed(f"{prefix}{what}: {one_line(cause)}", endpoint) from exc
    load_id = info.loads_ids[-1] if info.loads_ids else None
    for run in runs.values():
        run.load_id = load_id


def _endpoint_of(name: str | None) -> str | None:
    """The endpoint of a raw table or a resource (None: `_rejected`, shared, or unknown)."""
    if name == ITEMS_TABLE:
        return LISTEN_HISTORY.name
    if name and name.endswith(REJECTED_TABLE) and name != REJECTED_TABLE:
        name = name.removesuffix(REJECTED_TABLE)
    return name if name in ENDPOINTS else None


def check_rejects(read: EndpointRead, config: IngestionConfig) -> None:
    """Warn about rejected records; fail the run (IngestionFailed) above the share allowed."""
    if not read.builder.rejected:
        return
    name = read.endpoint.name
    records, rejected = read.check.received, read.builder.rejected
    share = rejected / records if records else 0.0
    reasons = ", ".join(f"{r} ({n})" for r, n in read.builder.rejected_by_reason.most_common(3))
    log.warning(
        "%s: %d of %d records rejected (%.2f%%): %s",
        name,
        rejected,
        records,
        100 * share,
        reasons,
    )
    if share > config.max_reject_share:
        raise IngestionFailed(
            f"{name}: {rejected} of {records} records break the contract "
            f"({share:.1%} > the {config.max_reject_share:.1%} allowed): {reasons}",
            name,
        )


# ---- the run ---------------------------------------------------------------------------------


@contextmanager
def warehouse_session(url: ConnectionURL) -> Iterator[psycopg.Connection]:
    with connect(url, autocommit=True) as conn:
        try:
            try_lock(conn)
        except IngestionLocked as exc:
            raise IngestionAlreadyRunning(str(exc)) from None
        yield conn


def run_ingestion(
    settings: Settings,
    run_id: str,
    *,
    api_url: str | None = None,
    config: IngestionConfig | None = None,
    transport: httpx.BaseTransport | None = None,
) -> IngestionResult:
    """Ingest the API at `api_url` (default: settings.api_url) into schema raw.

    Raises WarehouseUnreachable (the warehouse is down) or IngestionFailed (anything else);
    both carry a one-line message.
    """
    config = config or IngestionConfig()
    api_url = api_url or settings.api_url
    if not api_url:
        raise IngestionFailed("no API URL: set MOOVITAMIX_API_URL (or pass --api-url)")
    started = time.monotonic()
    boundary = datetime.now(UTC)
    steps: dict[str, float] = {}
    step = time.monotonic()
    warehouse = open_warehouse(settings)
    log.info("ingesting %s into %s (schema %s), run %s", api_url, warehouse.masked, RAW, run_id)
    runs = {name: EndpointRun(name) for name in ENDPOINTS}

    def stats_of(failure: IngestionFailed | None = None) -> dict[str, EndpointStats]:
        """Rows of the endpoints read: loaded; or failed (at fault) / discarded (read fine)."""
        out = {}
        for run in (r for r in runs.values() if r.reads):
            if failure is None:
                out[run.name] = run.stats(run_id, "loaded")
            elif failure.endpoint in (None, run.name):
                out[run.name] = run.stats(run_id, "failed", str(failure))
            else:
                out[run.name] = run.stats(run_id, "discarded")
        return out

    with warehouse_session(as_role(warehouse, LOADER)) as conn:
        pipeline = make_pipeline(settings, warehouse)
        try:
            _finish_pending(pipeline)
            known_hashes = known_history_hashes(conn)
            steps["prepare"] = time.monotonic() - step
            step = time.monotonic()
            context = SourceContext(
                client=ApiClient(
                    api_url,
                    concurrency=config.concurrency,
                    page_size=config.page_size,
                    retry=config.retry,
                    timeouts=config.timeouts,
                    transport=transport,
                    max_response_bytes=config.max_response_bytes,
                ),
                run_id=run_id,
                boundary=boundary,
                known_hashes=known_hashes,
                active_rows=partial(active_rows, conn),
                files_dir=Path(pipeline.working_dir) / "csv",
                file_rows=LOAD_FILE_ROWS,
                max_field_bytes=config.max_field_bytes,
                rereads=config.rereads,
                after_read=partial(check_rejects, config=config),
            )
            with context.client, page_progress(config.progress) as progress:
                context.on_plan, context.on_page = progress.on_plan, progress.on_page
                extract_endpoints(pipeline, context, runs)
            steps["extract"] = time.monotonic() - step
            step = time.monotonic()
            pipeline.normalize()
            steps["normalize"] = time.monotonic() - step
            step = time.monotonic()
            info: LoadInfo = pipeline.load()
            info.raise_on_failed_jobs()
            steps["load"] = time.monotonic() - step
            step = time.monotonic()
        except IngestionFailed as exc:
            _discard_packages(pipeline)
            record_failure(conn, stats_of(exc), exc)
            raise
        except PipelineStepFailed as exc:
            _discard_packages(pipeline)
            message = f"{exc.step} failed: {one_line(failure_cause(exc))}"
            if exc.step == "load":
                message = (
                    f"loading into {RAW} failed: {one_line(failure_cause(exc))} "
                    "(the packages stay pending: the next run loads them first)"
                )
            failure = IngestionFailed(message)
            record_failure(conn, stats_of(failure), failure)
            raise failure from None
        except psycopg.Error as exc:  # the warehouse went away during the run
            _discard_packages(pipeline)
            raise IngestionFailed(f"warehouse error: {one_line(exc)}") from exc

        loaded = [r for r in runs.values() if r.load_id]
        appended: Counter[str] = Counter()
        for run in loaded:
            if run.last is not None:
                appended.update({t: n for t, n in run.last.rows.items() if t != run.name})
        changes = table_changes(conn, [r.load_id for r in loaded], boundary, appended)
        stats = stats_of()
        for name, s in stats.items():
            change = changes.get(name)
            if change is not None:
                s.versions_added, s.versions_retired = change.added, change.retired
            if name == LISTEN_HISTORY.name and ITEMS_TABLE in changes:
                s.items_added = changes[ITEMS_TABLE].added
        write_stats(conn, list(stats.values()))
        steps["report"] = time.monotonic() - step
    log.info("steps: %s", ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    return IngestionResult(
        run_id=run_id,
        api_url=api_url,
        endpoints=stats,
        tables=changes,
        load_ids={n: r.load_id for n, r in runs.items() if r.load_id},
        seconds=time.monotonic() - started,
        boundary=boundary,
        steps={k: round(v, 2) for k, v in steps.items()},
    )


def record_failure(
    conn: psycopg.Connection, stats: dict[str, EndpointStats], exc: IngestionFailed
) -> None:
    exc.stats = stats
    try:
        write_stats(conn, list(stats.values()))
    except (psycopg.Error, WarehouseUnreachable) as write_exc:
        log.warning("could not write monitoring.ingestion_stats: %s", one_line(write_exc))

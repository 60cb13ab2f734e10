"""The ingestion run into the Parquet lake (dlt's filesystem destination, the Spark engine).

Same source, reads, checks and limits as the Postgres run (`pipeline.py`), but each run
appends a complete snapshot of every endpoint, as Parquet, under one load id:
`<lake>/raw/<table>/load_id=<load_id>/<file_id>.parquet` for tracks, users, listen_history,
listen_history__items, _rejected and _ingestion_stats (this run's stats). dlt writes its own
`_dlt_loads` (JSON lines, one file per load): a load is complete when it has a row there with
status 0, and readers take only such loads.

The control plane stays in Postgres: the run holds the ingestion lock of the warehouse and
writes monitoring.ingestion_stats there. A run that fails before its load leaves nothing in the
lake and no `_dlt_loads` row; a load that fails half way leaves files without one, and its
package stays pending: the next run loads it first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dlt
import httpx
import psycopg
import pyarrow as pa
from dlt.pipeline.exceptions import PipelineStepFailed
from dlt.pipeline.pipeline import Pipeline

from ingestion.config import IngestionConfig
from ingestion.console import page_progress
from ingestion.lake_current import LakeCurrent
from ingestion.moovitamix_source import SourceContext
from ingestion.moovitamix_source.arrow_tables import snapshot_columns
from ingestion.moovitamix_source.client import ApiClient
from ingestion.moovitamix_source.contract import ENDPOINTS, ITEMS_TABLE, LISTEN_HISTORY, TIMESTAMP
from ingestion.pipeline import (
    EndpointRun,
    IngestionFailed,
    IngestionResult,
    check_rejects,
    extract_endpoints,
    failure_cause,
    one_line,
    record_failure,
    route_dlt_logs,
    warehouse_session,
)
from ingestion.raw_tables import RAW, TableChange
from ingestion.stats import COLUMNS, EndpointStats, write_stats
from moovitamix.roles import LOADER, as_role
from moovitamix.settings import Settings, apply_offline_defaults
from moovitamix.warehouse import open_warehouse

log = logging.getLogger(__name__)

LAKE_PIPELINE_NAME = "moovitamix_lake"
LAKE_FILE_FORMAT = "parquet"
# hive-style folders per load: Spark prunes by load id
LAKE_LAYOUT = "{table_name}/load_id={load_id}/{file_id}.{ext}"
STATS_TABLE = "_ingestion_stats"
BUCKET_URL_CONFIG = "destination.filesystem.bucket_url"  # env DESTINATION__FILESYSTEM__BUCKET_URL

_JSON_COLUMNS = {"rejected_by_reason", "retries", "http_errors", "new_fields"}
_STATS_TYPES = {
    "api_total": pa.int64(), "pages": pa.int32(), "records": pa.int64(),
    "rejected": pa.int64(), "requests": pa.int32(), "bytes": pa.int64(), "rereads": pa.int32(),
    "versions_added": pa.int64(), "versions_retired": pa.int64(), "items_added": pa.int64(),
    "carried_forward": pa.int64(), "seconds": pa.float64(), "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
}  # fmt: skip
STATS_SCHEMA = pa.schema([pa.field(c, _STATS_TYPES.get(c, pa.string())) for c in COLUMNS])


def lake_bucket_url(settings: Settings, bucket_url: str | None = None) -> str:
    """Where the lake is: `bucket_url`, else dlt's own config (DESTINATION__FILESYSTEM__
    BUCKET_URL or .dlt/config.toml), else Settings.lake (LAKE_URL, default data_dir/lake)."""
    if bucket_url:
        return bucket_url
    configured = dlt.config.get(BUCKET_URL_CONFIG, str)
    if not configured:
        return settings.lake
    if str(configured) != settings.lake:
        log.warning(
            "loading the lake at %s (dlt's %s), not at %s: the Spark engine's dbt reads LAKE_URL",
            configured,
            BUCKET_URL_CONFIG,
            settings.lake,
        )
    return str(configured)


def lake_pipelines_dir(settings: Settings, bucket_url: str) -> Path:
    """dlt's working dir of the lake pipeline: its own, per lake, apart from the Postgres one."""
    digest = hashlib.sha256(bucket_url.encode()).hexdigest()[:12]
    return settings.data_dir / "dlt" / f"lake-{digest}"


def make_lake_pipeline(settings: Settings, bucket_url: str) -> Pipeline:
    """The dlt pipeline into `<bucket_url>/raw`; its working dir is under the data dir."""
    apply_offline_defaults()
    dlt.config["load.delete_completed_jobs"] = True
    pipeline = dlt.pipeline(
        pipeline_name=LAKE_PIPELINE_NAME,
        pipelines_dir=str(lake_pipelines_dir(settings, bucket_url)),
        destination=dlt.destinations.filesystem(bucket_url=bucket_url, layout=LAKE_LAYOUT),
        dataset_name=RAW,
    )
    route_dlt_logs()
    return pipeline


def _scratch_root(settings: Settings) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir


def _finish_pending(pipeline: Pipeline) -> None:
    """Load what an earlier run normalized but did not finish loading (a complete snapshot);
    abort what it only extracted (its run failed: it must leave nothing)."""
    normalized = pipeline.list_normalized_load_packages()
    if normalized:
        log.warning(
            "an earlier run left load package(s) %s not fully loaded into the lake: "
            "loading them first",
            ", ".join(normalized),
        )
        pipeline.load().raise_on_failed_jobs()
    if pipeline.has_pending_data:
        log.info("dropping extracted packages of an earlier failed run")
        pipeline.abort_packages()


def _discard(pipeline: Pipeline) -> None:
    """Drop what the failed run extracted (a normalized package stays: the next run loads it)."""
    try:
        if pipeline.list_extracted_load_packages() and not pipeline.list_normalized_load_packages():
            pipeline.abort_packages()
    except Exception:  # the failure being reported matters more
        log.exception("could not discard the run's load packages")


def _snapshot_stats(runs: dict[str, EndpointRun], run_id: str) -> dict[str, EndpointStats]:
    """The stats of a complete snapshot: every served record is a row of it."""
    out = {}
    for run in (r for r in runs.values() if r.reads):
        s = run.stats(run_id, "loaded")
        read = run.last
        if read is not None:
            s.versions_added = read.rows.get(ENDPOINTS[run.name].table, 0)
            if run.name == LISTEN_HISTORY.name:
                s.items_added = read.rows.get(ITEMS_TABLE, 0)
        out[run.name] = s
    return out


def stats_table(stats: list[EndpointStats], load_id: str, snapshot_at: datetime) -> pa.Table:
    """monitoring.ingestion_stats rows as a lake table (JSON columns as text)."""
    rows = []
    for s in stats:
        row = {name: getattr(s, name) for name in COLUMNS}
        for name in _JSON_COLUMNS:
            row[name] = json.dumps(dict(row[name]), sort_keys=True)
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=STATS_SCHEMA)
    n = table.num_rows
    return pa.Table.from_arrays(
        [
            *table.columns,
            pa.repeat(pa.scalar(load_id, pa.string()), n),
            pa.repeat(pa.scalar(snapshot_at, TIMESTAMP), n),
        ],
        schema=snapshot_columns(STATS_SCHEMA),
    )


def _summary(
    context: SourceContext, runs: dict[str, EndpointRun], run_id: str
) -> Callable[[], pa.Table]:
    def make() -> pa.Table:
        load_id = dlt.current.load_package_state()["load_id"]
        for name, reads in context.reads.items():
            runs[name].reads = reads
            runs[name].load_id = load_id
        stats = _snapshot_stats(runs, run_id)
        return stats_table(list(stats.values()), load_id, context.boundary)

    return make


def run_lake_ingestion(
    settings: Settings,
    run_id: str,
    *,
    api_url: str | None = None,
    bucket_url: str | None = None,
    config: IngestionConfig | None = None,
    transport: httpx.BaseTransport | None = None,
) -> IngestionResult:
    """Append a complete snapshot of the API at `api_url` to the lake at `bucket_url`
    (default: `lake_bucket_url(settings)`); the stats go to the warehouse's monitoring too.

    Raises WarehouseUnreachable (the control plane is down) or IngestionFailed (anything
    else); both carry a one-line message.
    """
    config = config or IngestionConfig()
    api_url = api_url or settings.api_url
    if not api_url:
        raise IngestionFailed("no API URL: set MOOVITAMIX_API_URL (or pass --api-url)")
    bucket_url = lake_bucket_url(settings, bucket_url)
    started = time.monotonic()
    boundary = datetime.now(UTC)
    steps: dict[str, float] = {}
    step = time.monotonic()
    warehouse = open_warehouse(settings)
    log.info("ingesting %s into the lake %s (dataset %s), run %s", api_url, bucket_url, RAW,
             run_id)  # fmt: skip
    runs = {name: EndpointRun(name) for name in ENDPOINTS}

    def stats_of(failure: IngestionFailed) -> dict[str, EndpointStats]:
        out = {}
        for run in (r for r in runs.values() if r.reads):
            status = "failed" if failure.endpoint in (None, run.name) else "discarded"
            out[run.name] = run.stats(run_id, status, str(failure) if status == "failed" else None)
        return out

    with (
        warehouse_session(as_role(warehouse, LOADER)) as conn,
        # the snapshot's rows wait on disk until their read adds up (not in a tmpfs /tmp)
        tempfile.TemporaryDirectory(prefix="lake-extract-", dir=_scratch_root(settings)) as scratch,
    ):
        pipeline = make_lake_pipeline(settings, bucket_url)
        try:
            _finish_pending(pipeline)
            steps["prepare"] = time.monotonic() - step
            step = time.monotonic()
            current = LakeCurrent(bucket_url)  # rejected records keep their last good row
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
                files_dir=Path(scratch) / "tables",
                max_field_bytes=config.max_field_bytes,
                rereads=config.rereads,
                after_read=lambda read: check_rejects(read, config),
                active_rows=current.rows,
                active_items=current.items,
                snapshot=True,
                summary_table=STATS_TABLE,
            )
            context.summary = _summary(context, runs, run_id)
            with context.client, page_progress(config.progress) as progress:
                context.on_plan, context.on_page = progress.on_plan, progress.on_page
                extract_endpoints(pipeline, context, runs, loader_file_format=LAKE_FILE_FORMAT)
            steps["extract"] = time.monotonic() - step
            step = time.monotonic()
            pipeline.normalize()
            steps["normalize"] = time.monotonic() - step
            step = time.monotonic()
            pipeline.load().raise_on_failed_jobs()
            steps["load"] = time.monotonic() - step
            step = time.monotonic()
        except IngestionFailed as exc:
            _discard(pipeline)
            record_failure(conn, stats_of(exc), exc)
            raise
        except PipelineStepFailed as exc:
            _discard(pipeline)
            message = f"{exc.step} failed: {one_line(failure_cause(exc))}"
            if exc.step == "load":
                message = (
                    f"loading into the lake {bucket_url} failed: {one_line(failure_cause(exc))} "
                    "(the package stays pending: the next run loads it first)"
                )
            failure = IngestionFailed(message)
            record_failure(conn, stats_of(failure), failure)
            raise failure from None
        except psycopg.Error as exc:  # the control plane went away during the run
            _discard(pipeline)
            raise IngestionFailed(f"warehouse error: {one_line(exc)}") from exc

        stats = _snapshot_stats(runs, run_id)
        write_stats(conn, list(stats.values()))
        steps["report"] = time.monotonic() - step
    tables: dict[str, TableChange] = {}
    for run in runs.values():
        if run.last is not None:
            for table, rows in run.last.rows.items():
                previous = tables.get(table)
                tables[table] = TableChange(table, rows + (previous.added if previous else 0))
    log.info("steps: %s", ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
    return IngestionResult(
        run_id=run_id,
        api_url=api_url,
        endpoints=stats,
        tables=tables,
        load_ids={n: r.load_id for n, r in runs.items() if r.load_id},
        seconds=time.monotonic() - started,
        boundary=boundary,
        steps={k: round(v, 2) for k, v in steps.items()},
        destination=bucket_url,
    )

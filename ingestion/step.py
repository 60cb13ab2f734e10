"""Ingestion as a step of the daily run (moovitamix/daily.py): into schema raw on the Postgres
engine, a snapshot appended to the Parquet lake (Settings.lake) on the Spark engine."""

from __future__ import annotations

from ingestion.lake import run_lake_ingestion
from ingestion.pipeline import IngestionFailed, IngestionResult, run_ingestion
from moovitamix.step import RunContext, StepFailed, StepReport


def ingest(ctx: RunContext) -> StepReport:
    """Load the API into raw; a failure names the endpoint and page, and loads nothing."""
    if ctx.settings.engine == "spark":
        return _ingest_lake(ctx)
    try:
        result = run_ingestion(ctx.settings, ctx.run_id, api_url=ctx.api_url)
    except IngestionFailed as exc:
        raise StepFailed(str(exc)) from None
    per_endpoint = _facts(ctx, result)
    counts = ", ".join(f"{name} {count:,}" for name, count in per_endpoint.items())
    versions = sum(
        change.added for name, change in result.tables.items() if change.retired is not None
    )
    summary = (
        f"{counts}; {versions:,} new versions, {result.items_added:,} items, "
        f"{result.rejected:,} rejected"
    )
    return StepReport(
        summary,
        rows_in=result.records,
        rows_out=sum(change.added for change in result.tables.values()),
        details={
            "load_ids": result.load_ids,
            "records": per_endpoint,
            "rejected": result.rejected,
            "tables": {name: vars(change) for name, change in result.tables.items()},
        },
    )


def _facts(ctx: RunContext, result: IngestionResult) -> dict[str, int]:
    per_endpoint = {name: stats.records for name, stats in result.endpoints.items()}
    ctx.facts["records"] = per_endpoint
    ctx.facts["rejected"] = result.rejected
    return per_endpoint


def _ingest_lake(ctx: RunContext) -> StepReport:
    """Append a complete snapshot to the lake; the stats go to the control plane too."""
    try:
        # the lake dbt reads (Settings.lake), whatever dlt's own config says
        result = run_lake_ingestion(
            ctx.settings, ctx.run_id, api_url=ctx.api_url, bucket_url=ctx.settings.lake
        )
    except IngestionFailed as exc:
        raise StepFailed(str(exc)) from None
    per_endpoint = _facts(ctx, result)
    counts = ", ".join(f"{name} {count:,}" for name, count in per_endpoint.items())
    load_ids = sorted(set(result.load_ids.values()))
    summary = (
        f"{counts} into the lake {result.destination} (load {', '.join(load_ids)}); "
        f"{result.items_added:,} items, {result.rejected:,} rejected"
    )
    return StepReport(
        summary,
        rows_in=result.records,
        rows_out=sum(change.added for change in result.tables.values()),
        details={
            "destination": result.destination,
            "load_ids": result.load_ids,
            "records": per_endpoint,
            "rejected": result.rejected,
            "tables": {name: change.added for name, change in result.tables.items()},
        },
    )

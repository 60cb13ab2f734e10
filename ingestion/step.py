"""Ingestion as a step of the daily run (orchestrator/): into schema raw on the Postgres
engine, a snapshot appended to the Parquet lake (Settings.lake, the lake dbt reads) on Spark."""

from __future__ import annotations

from ingestion.pipeline import IngestionFailed, run_ingestion
from moovitamix.step import RunContext, StepFailed, StepReport

__all__ = ["ingest"]


def ingest(ctx: RunContext) -> StepReport:
    """Load the API; a failure names the endpoint and page, and loads nothing."""
    lake = ctx.settings.engine == "spark"
    try:
        result = run_ingestion(
            ctx.settings,
            ctx.run_id,
            api_url=ctx.api_url,
            warehouse=ctx.warehouse,
            destination="filesystem" if lake else "postgres",
            bucket_url=ctx.settings.lake if lake else None,
        )
    except IngestionFailed as exc:
        raise StepFailed(str(exc)) from None
    per_endpoint = {name: stats.records for name, stats in result.endpoints.items()}
    ctx.facts.update(records=per_endpoint, rejected=result.rejected)
    counts = ", ".join(f"{name} {count:,}" for name, count in per_endpoint.items())
    if lake:
        load_ids = ", ".join(sorted(set(result.load_ids.values())))
        summary = f"{counts} into the lake {result.destination} (load {load_ids}); "
    else:
        versions = sum(c.added for c in result.tables.values() if c.retired is not None)
        summary = f"{counts}; {versions:,} new versions, "
    return StepReport(
        f"{summary}{result.items_added:,} items, {result.rejected:,} rejected",
        rows_in=result.records,
        rows_out=sum(change.added for change in result.tables.values()),
        details={
            "destination": result.destination,
            "load_ids": result.load_ids,
            "records": per_endpoint,
            "rejected": result.rejected,
            "tables": {name: vars(change) for name, change in result.tables.items()},
        },
    )

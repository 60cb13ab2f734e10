"""Ingestion as a step of the daily run (moovitamix/daily.py)."""

from __future__ import annotations

from ingestion.pipeline import IngestionFailed, run_ingestion
from moovitamix.step import RunContext, StepFailed, StepReport


def ingest(ctx: RunContext) -> StepReport:
    """Load the API into raw; a failure names the endpoint and page, and loads nothing."""
    try:
        result = run_ingestion(ctx.settings, ctx.run_id, api_url=ctx.api_url)
    except IngestionFailed as exc:
        raise StepFailed(str(exc)) from None
    per_endpoint = {name: stats.records for name, stats in result.endpoints.items()}
    ctx.facts["records"] = per_endpoint
    ctx.facts["rejected"] = result.rejected
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

"""The daily run's `erase` step: every pending erasure request, before ingestion (whose
suppression list it completes)."""

from __future__ import annotations

from moovitamix.step import RunContext, StepFailed, StepReport
from privacy import ErasureFailed
from privacy.erasure import process_requests


def erase(ctx: RunContext) -> StepReport:
    try:
        done = process_requests(ctx.warehouse, ctx.settings)
    except ErasureFailed as exc:
        raise StepFailed(str(exc)) from None
    removed = sum(erased.total for erased in done)
    details = {str(erased.request_id): erased.total for erased in done}
    return StepReport(
        f"{len(done)} erasure request(s) done, {removed:,} rows removed",
        rows_out=removed,
        details=details,
    )

"""The monitoring layer's steps of the daily run: `validate_data` after the transform, before
ML; `validate_recommendations` after the ML step, before publishing; `health_report` last. In
the daily run they check the candidate marts and the staged lists (ctx.relations)."""

from __future__ import annotations

from expectations.suites import Stage
from expectations.thresholds import SEVERITIES
from moovitamix.step import RunContext, StepFailed, StepReport

__all__ = ["health_report", "validate_data", "validate_recommendations"]


def _validate(ctx: RunContext, stage: Stage) -> StepReport:
    from expectations.validate import run_validation

    outcome = run_validation(
        ctx.settings,
        ctx.run_id,
        ctx.warehouse,
        stage=stage,
        relations=ctx.relations,
        # through the run context: the alerts count in the run's summary
        alert=lambda a: ctx.alert(a.severity, a.title, a.step, **dict(a.details)),
    )
    errors, warnings = (
        [f"{r.suite}.{r.expectation}" for r in outcome.failed(severity)] for severity in SEVERITIES
    )
    if errors:
        raise StepFailed(f"{len(errors)} error expectation(s) failed: {', '.join(errors)}")
    if outcome.validated_nothing:
        why = "; ".join(f"{suite}: {reason}" for suite, reason in outcome.skipped)
        raise StepFailed(f"nothing validated: every suite was skipped ({why})")
    details: dict[str, object] = {
        "counts": outcome.counts(),
        "skipped": dict(outcome.skipped),
        "data_docs": str(outcome.data_docs) if outcome.data_docs else None,
        "warnings": warnings,
    }
    return StepReport(outcome.summary(), rows_out=len(outcome.results), details=details)


def validate_data(ctx: RunContext) -> StepReport:
    """The raw and marts suites: an error expectation fails the step (and so the run)."""
    return _validate(ctx, Stage.DATA)


def validate_recommendations(ctx: RunContext) -> StepReport:
    """The recommendations suite, on the lists the ML step staged (or published, outside the
    daily run's write-audit-publish)."""
    return _validate(ctx, Stage.RECOMMENDATIONS)


def health_report(ctx: RunContext) -> StepReport:
    """Write reports/health.html from the run ledger and the monitoring tables."""
    from expectations.report import default_report_path, write_health_report

    path = write_health_report(ctx.warehouse, default_report_path(ctx.settings))
    return StepReport(f"health report: {path}", details={"path": str(path)})

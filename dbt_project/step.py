"""The dbt build as a step of the daily run: `transform`."""

from __future__ import annotations

import logging
from contextlib import nullcontext

from dbt_project.checked_loads import DETAIL as CHECKED_THROUGH
from dbt_project.checked_loads import newest_load
from dbt_project.contracts import drifted_tables
from dbt_project.rebuild import REBUILD_ENV, changed_share, outgrown_buffers, rebuild_share
from dbt_project.runner import run_build
from moovitamix import spark_publication
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import CANDIDATE, mark_built, prepare_candidate
from moovitamix.roles import PUBLISHER
from moovitamix.settings import temporary_env
from moovitamix.spark import spark_session
from moovitamix.spark_publication import stage_marts
from moovitamix.step import RunContext, StepFailed, StepReport
from moovitamix.warehouse import connect

__all__ = ["transform"]

log = logging.getLogger(__name__)


def _drifted(ctx: RunContext, schema: str) -> bool:
    """Whether a mart of `schema` was built to another contract (an older version of the
    project): then the schema is rebuilt in full, rather than an incremental build failing."""
    with connect(ctx.warehouse, autocommit=True) as conn:
        drift = drifted_tables(conn, schema)
    for name, what in drift.items():
        log.warning("%s.%s %s: rebuilding %s in full", schema, name, what, schema)
    return bool(drift)


def _rebuild_listens(ctx: RunContext, schema: str) -> float | None:
    """The share of listen histories changed since `schema`.fct_listens was built, when it is
    above `listens_rebuild_share` and the table outgrows the server's buffers (dbt_project.rebuild):
    that table is then rebuilt in full."""
    with connect(ctx.warehouse, autocommit=True) as conn:
        share = changed_share(conn, schema)
        threshold = rebuild_share()
        if share is None or share <= threshold:
            return None
        sizes = outgrown_buffers(conn, schema)
    if sizes is None:
        return None
    log.info(
        "%.0f%% of the listen histories changed since %s.fct_listens was built (over %.0f%%),"
        " and it outgrows the server's buffers (%.1f GB with its indexes, shared_buffers"
        " %.1f GB): rebuilding it in full",
        100 * share,
        schema,
        100 * threshold,
        sizes[0] / 2**30,
        sizes[1] / 2**30,
    )
    return share


def _owner(ctx: RunContext) -> ConnectionURL:
    """Who marks the candidate's state (a comment on the schema, its owner's to write): the
    publisher's login in the daily run, else the URL the step was given."""
    return ctx.url_as(PUBLISHER) if ctx.logins is not None else ctx.warehouse


def _newest_load(ctx: RunContext) -> str | None:
    """The newest completed load as the build starts: a build that passes has checked its
    elements and those of every load before it (dbt_project/checked_loads.py)."""
    with connect(ctx.warehouse, autocommit=True) as conn:
        return newest_load(conn)


def transform(ctx: RunContext) -> StepReport:
    """dbt build of staging and marts without the unit tests, under a publication into the
    candidate (rebuilt in full after a failed run); dbt's first error fails the step, warnings
    pass, listed in the details."""
    marts_schema, full_refresh, listens_share = None, False, None
    on_spark = ctx.settings.engine == "spark"
    if ctx.publication is not None and on_spark:
        candidate = stage_marts(ctx.publication, spark_session(ctx.settings))
        marts_schema, full_refresh = candidate.slot, candidate.full_refresh
    elif ctx.publication is not None:  # write-audit-publish: build the candidate, not the marts
        marts_schema = CANDIDATE
        full_refresh = prepare_candidate(_owner(ctx), ctx.run_id)
        if not full_refresh:
            full_refresh = _drifted(ctx, CANDIDATE)
        if not full_refresh:
            listens_share = _rebuild_listens(ctx, CANDIDATE)
    # the daily run's (its ledger keeps the record); on Spark the test checks every load
    daily_on_postgres = ctx.publication is not None and not on_spark
    checked_through = _newest_load(ctx) if daily_on_postgres else None
    progress = ctx.build_progress
    try:
        with temporary_env(REBUILD_ENV, "1") if listens_share is not None else nullcontext():
            result = run_build(
                ctx.settings,
                ctx.run_id,
                ctx.warehouse,
                exclude_unit_tests=True,
                full_refresh=full_refresh,
                marts_schema=marts_schema,
                callbacks=[progress.dbt_callback] if progress is not None else [],
            )
    finally:
        if progress is not None:
            progress.end()
    for line in result.table().splitlines():
        log.info("%s", line)
    if not result.success:
        raise StepFailed(result.summary())
    if ctx.publication is not None and on_spark:
        spark_publication.mark_built(
            spark_session(ctx.settings), ctx.publication.candidate, ctx.run_id
        )
    elif ctx.publication is not None:
        mark_built(_owner(ctx), ctx.run_id)
    rows = {node.name: node.rows_affected for node in result.models}
    warnings = {node.name: node.failures for node in result.warned}
    ctx.facts["marts"] = {name: count for name, count in rows.items() if count is not None}
    summary = result.summary()
    if warnings:
        summary += "; warnings: " + ", ".join(f"{n} {c}" for n, c in warnings.items())
    return StepReport(
        summary,
        rows_out=sum(count for count in rows.values() if count is not None),
        details={
            "rows": rows,
            "seconds": {node.name: round(node.seconds, 2) for node in result.models},
            "tests": len(result.tests),
            "warnings": warnings,
            "marts_schema": marts_schema or "marts",
            "full_refresh": full_refresh,
            # the share of changed histories that had fct_listens rebuilt (null: it was not)
            "listens_rebuilt_at_share": listens_share,
            # the newest load whose elements this build checked: the next build's start
            CHECKED_THROUGH: checked_through,
        },
    )

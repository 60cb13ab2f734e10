"""Suites of schema marts: orphaned listens, and day-over-day changes against the previous
successful run's figures (monitoring.run_metrics, recorded by expectations/run_metrics.py)."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.dialect import sql_text
from expectations.suites import BuildContext, SuiteSpec


def _orphans(ctx: BuildContext) -> list[Check]:
    query = f"""
        with orphaned as (
            select coalesce(sum(listen_count), 0) as listens,
                   coalesce(sum(listen_count) filter (where orphan_reason = 'unknown_track'), 0)
                       as unknown_track,
                   coalesce(sum(listen_count) filter (where orphan_reason = 'deleted_track'), 0)
                       as deleted_track,
                   coalesce(sum(listen_count) filter (where orphan_reason = 'unknown_user'), 0)
                       as unknown_user
            from {{batch}} as o
        ),
        valid as (
            select coalesce(sum(listen_count), 0) as listens from {ctx.rel(t.FCT_LISTENS)}
        )
        select 'listens' as subject,
               orphaned.listens as orphaned_listens,
               orphaned.unknown_track, orphaned.deleted_track, orphaned.unknown_user,
               valid.listens + orphaned.listens as all_listens,
               {ctx.dialect.as_float("orphaned.listens")}
                   / nullif(valid.listens + orphaned.listens, 0) as observed
        from orphaned cross join valid"""
    return [Check(ctx.thresholds["marts.orphaned_listens"], query, "share")]


def _figures(ctx: BuildContext, metric: str) -> str:
    """CTEs: this run's figures of `metric`, the previous successful run (in the run ledger)
    that recorded it, and that run's figures."""
    run, runs = sql_text(ctx.run_id), ctx.rel(t.PIPELINE_RUNS)
    return f"""
        current_figures as (
            select cur.subject, cur.value from {{batch}} as cur
            where cur.metric = '{metric}' and cur.run_id = {run}
        ),
        previous_run as (
            select m.run_id
            from {{batch}} as m
            join {runs} as r on r.run_id = m.run_id
            where m.metric = '{metric}' and m.run_id <> {run} and r.status = 'success'
              and r.started_at < coalesce(
                  (select started_at from {runs} where run_id = {run}), {ctx.dialect.now()})
            order by r.started_at desc
            limit 1
        ),
        previous_figures as (
            select prev.subject, prev.value from {{batch}} as prev
            where prev.metric = '{metric}' and prev.run_id = (select run_id from previous_run)
        )"""


def _volume_query(ctx: BuildContext, change: str) -> str:
    return f"""
        with {_figures(ctx, "rows")}
        select c.subject, (select run_id from previous_run) as previous_run_id,
               p.value as previous_rows, c.value as current_rows,
               greatest({change}, 0) / nullif(p.value, 0) as observed
        from current_figures as c
        left join previous_figures as p on p.subject = c.subject"""


def _genre_drift_query(ctx: BuildContext) -> str:
    return f"""
        with {_figures(ctx, "genre_share")},
        diffs as (
            select coalesce(c.subject, p.subject) as genre_id,
                   coalesce(c.value, 0) - coalesce(p.value, 0) as change
            from current_figures as c
            full join previous_figures as p on p.subject = c.subject
        )
        select 'listens by genre' as subject,
               (select run_id from previous_run) as previous_run_id,
               (select genre_id from diffs order by abs(change) desc limit 1)
                   as most_changed_genre,
               case when exists (select 1 from previous_figures)
                         and exists (select 1 from current_figures)
                    then 0.5 * (select sum(abs(change)) from diffs) end as observed"""


def _day_over_day(ctx: BuildContext) -> list[Check]:
    th = ctx.thresholds
    return [
        Check(th["marts.volume_drop"], _volume_query(ctx, "p.value - c.value"), "share"),
        Check(th["marts.volume_growth"], _volume_query(ctx, "c.value - p.value"), "share"),
        Check(th["marts.genre_share_drift"], _genre_drift_query(ctx), "distance"),
    ]


SUITES = (
    SuiteSpec("marts.orphaned_listens", t.FCT_ORPHANED_LISTENS, _orphans, (t.FCT_LISTENS,)),
    SuiteSpec("marts.day_over_day", t.RUN_METRICS, _day_over_day, (t.PIPELINE_RUNS,)),
)

"""Suites of schema raw: the current version of each record (formats, timestamps), and the load
as a whole against what the API reported (monitoring.ingestion_stats)."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.suites import BuildContext, SuiteSpec

EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
DURATION_REGEX = r"^[0-5][0-9]:[0-5][0-9]$"  # "MM:SS", minutes 00-59 (the API's contract)


def _timestamps_not_in_future(ctx: BuildContext, table: str) -> list[Check]:
    limits = ctx.thresholds["raw.timestamps_not_in_future"]
    minutes = int(limits.param("tolerance_minutes", 60))
    late = f"greatest(created_at, updated_at) > {ctx.dialect.now_plus_minutes(minutes)}"
    query = f"""
        select '{table}' as subject,
               count(*) filter (where {late}) as observed,
               max(greatest(created_at, updated_at)) as latest_timestamp
        from {{batch}} as b"""
    return [Check(limits, query, "rows", table)]


def _format(ctx: BuildContext, check: str, column: str, regex: str) -> Check:
    """The share of values that break a format, read where the batch is, on either engine."""
    bad = f"count(*) filter (where {ctx.dialect.not_matching(column, regex)})"
    query = f"""
        select 'values' as subject, {bad} as breaking, count({column}) as checked_values,
               {ctx.dialect.as_float(bad)} / nullif(count({column}), 0) as observed
        from {{batch}} as b"""
    return Check(ctx.thresholds[check], query, "share")


def _users(ctx: BuildContext) -> list[Check]:
    return [
        _format(ctx, "raw.email_format", "email", EMAIL_REGEX),
        *_timestamps_not_in_future(ctx, t.RAW_USERS),
    ]


def _tracks(ctx: BuildContext) -> list[Check]:
    return [
        _format(ctx, "raw.duration_format", "duration", DURATION_REGEX),
        *_timestamps_not_in_future(ctx, t.RAW_TRACKS),
    ]


# Per endpoint, its row of the latest ingestion run that loaded it: what raw holds now.
# (row_number rather than Postgres' `distinct on`: Spark SQL has no `distinct on`)
LATEST_LOADED = """
    select ranked.* from (
        select stats.*,
               row_number() over (partition by stats.endpoint order by stats.started_at desc)
                   as recency
        from {batch} as stats
        where stats.status = 'loaded'
    ) as ranked
    where ranked.recency = 1"""


def _current_rows(ctx: BuildContext) -> str:
    return "\n    union all ".join(
        f"select '{endpoint}' as endpoint, count(*) as raw_rows from {ctx.rel(table)} "
        f"where {ctx.dialect.current_rows(table)}"
        for endpoint, table in t.RAW_TABLES.items()
    )


def _ingestion(ctx: BuildContext) -> list[Check]:
    # erased users' records are dropped on purpose (privacy/): not missing
    expected = (
        "coalesce(s.api_total, s.records) - s.rejected - coalesce(s.suppressed, 0)"
        " + s.carried_forward"
    )
    row_counts = f"""
        with latest as ({LATEST_LOADED}),
        current_rows as ({_current_rows(ctx)})
        select s.endpoint as subject, s.run_id, s.api_total, s.rejected, s.carried_forward,
               {expected} as expected_rows,
               coalesce(c.raw_rows, 0) as raw_rows,
               abs(coalesce(c.raw_rows, 0) - ({expected})) as observed
        from latest as s
        left join current_rows as c on c.endpoint = s.endpoint"""
    rejected = f"""
        select endpoint as subject, run_id, records, rejected,
               {ctx.dialect.as_float("rejected")} / nullif(records, 0) as observed
        from ({LATEST_LOADED}) as latest"""
    retries = f"""
        select s.endpoint as subject, s.run_id, s.status, s.requests, r.retried,
               {ctx.dialect.as_float("r.retried")} / nullif(s.requests, 0) as observed
        from {{batch}} as s
        cross join lateral (
            {ctx.dialect.json_values_sum("s.retries", "retried")}
        ) as r
        where s.run_id = (
            select l.run_id from {{batch}} as l order by l.started_at desc limit 1
        )"""
    th = ctx.thresholds
    return [
        Check(th["raw.row_count_matches_api_total"], row_counts, "rows"),
        Check(th["raw.rejected_share"], rejected, "share"),
        Check(th["raw.retry_storm"], retries, "share"),
    ]


SUITES = (
    SuiteSpec("raw.users", t.RAW_USERS, _users, current=True),
    SuiteSpec("raw.tracks", t.RAW_TRACKS, _tracks, current=True),
    SuiteSpec(
        "raw.listen_history",
        t.RAW_LISTEN_HISTORY,
        lambda ctx: _timestamps_not_in_future(ctx, t.RAW_LISTEN_HISTORY),
        current=True,
    ),
    SuiteSpec("raw.ingestion", t.INGESTION_STATS, _ingestion, tuple(t.RAW_TABLES.values())),
)

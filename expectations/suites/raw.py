"""Suites of schema raw: the current version of each record (formats, timestamps), and the load
as a whole against what the API reported (monitoring.ingestion_stats)."""

from __future__ import annotations

from great_expectations.expectations import Expectation

from expectations import tables as t
from expectations.checks import format_checks, metric_checks
from expectations.suites import AssetSpec, BuildContext, Stage, SuiteSpec

EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
DURATION_REGEX = r"^[0-5][0-9]:[0-5][0-9]$"  # "MM:SS", minutes 00-59 (the API's contract)


def _current(table: str) -> AssetSpec:
    name = table.replace(".", "_") + "_current"
    return AssetSpec(name, query=f"select * from {table} where {t.CURRENT}", current_of=table)


def _timestamps_not_in_future(ctx: BuildContext, table: str) -> list[Expectation]:
    limits = ctx.thresholds["raw.timestamps_not_in_future"]
    minutes = int(limits.param("tolerance_minutes", 60))
    late = f"greatest(created_at, updated_at) > {ctx.dialect.now_plus_minutes(minutes)}"
    query = f"""
        select '{table}' as subject,
               count(*) filter (where {late}) as observed,
               max(greatest(created_at, updated_at)) as latest_timestamp
        from {{batch}} as b"""
    return metric_checks(
        limits,
        query=query,
        unit="rows",
        description=f"Current {table} rows with created_at or updated_at in the future",
    )


def _users(ctx: BuildContext) -> list[Expectation]:
    return [
        *format_checks(
            ctx.thresholds["raw.email_format"],
            column="email",
            regex=EMAIL_REGEX,
            description="Users' emails look like local@domain.tld",
        ),
        *_timestamps_not_in_future(ctx, t.RAW_USERS),
    ]


def _tracks(ctx: BuildContext) -> list[Expectation]:
    return [
        *format_checks(
            ctx.thresholds["raw.duration_format"],
            column="duration",
            regex=DURATION_REGEX,
            description='Tracks\' durations are "MM:SS"',
        ),
        *_timestamps_not_in_future(ctx, t.RAW_TRACKS),
    ]


def _listen_history(ctx: BuildContext) -> list[Expectation]:
    return _timestamps_not_in_future(ctx, t.RAW_LISTEN_HISTORY)


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


def _ingestion(ctx: BuildContext) -> list[Expectation]:
    expected = "coalesce(s.api_total, s.records) - s.rejected + s.carried_forward"
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
        *metric_checks(
            th["raw.row_count_matches_api_total"],
            query=row_counts,
            unit="rows",
            description="Rows by which current raw differs from the API's total, per endpoint",
            alert="raw row count does not match the API's total",
        ),
        *metric_checks(
            th["raw.rejected_share"],
            query=rejected,
            unit="share",
            description="Share of records rejected by the contract, per endpoint",
        ),
        *metric_checks(
            th["raw.retry_storm"],
            query=retries,
            unit="share",
            description="Share of API requests retried in the latest ingestion, per endpoint",
            alert="retry storm: too many API requests retried",
        ),
    ]


SUITES = (
    SuiteSpec("raw.users", _current(t.RAW_USERS), Stage.DATA, (t.RAW_USERS,), _users),
    SuiteSpec("raw.tracks", _current(t.RAW_TRACKS), Stage.DATA, (t.RAW_TRACKS,), _tracks),
    SuiteSpec(
        "raw.listen_history",
        _current(t.RAW_LISTEN_HISTORY),
        Stage.DATA,
        (t.RAW_LISTEN_HISTORY,),
        _listen_history,
    ),
    SuiteSpec(
        "raw.ingestion",
        AssetSpec("ingestion_stats", table=t.INGESTION_STATS),
        Stage.DATA,
        (t.INGESTION_STATS, *t.RAW_TABLES.values()),
        _ingestion,
    ),
)

"""Suites of schema recommendations, run on the lists the ML step staged, before they are
published: every active user (a user of marts.dim_users with at least one listen) has
recommendations, and every catalog track (marts.dim_tracks, played or not) a "play next"."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.suites import BuildContext, Stage, SuiteSpec


def _without_lists(ctx: BuildContext, owners: str, key: str, subject: str, missing: str) -> str:
    """The share of `owners` (a query of distinct `key`s) with no row in the batch, named
    `subject` with the count column `missing`. Semi joins (`exists`), not the distinct keys of
    the batch and of the listens: at a million users those were aggregates of 10M and 20M rows.
    Each count is a one-row derived table, computed once: as columns of a CTE, each use of the
    count in the select list became its own subquery, and the semi join ran twice."""
    total = subject.replace(" ", "_")
    return f"""
        with owners as ({owners})
        select '{subject}' as subject,
               owned as {total},
               owned - covered as {missing},
               {ctx.dialect.as_float("owned - covered")} / nullif(owned, 0) as observed
        from (select count(*) as owned from owners) as owned_count
        cross join (
            select count(*) as covered from owners as o
            where exists (select 1 from {{batch}} as r where r.{key} = o.{key})
        ) as covered_count"""


def _coverage(ctx: BuildContext) -> list[Check]:
    active = f"""
        select distinct u.user_id
        from {ctx.rel(t.DIM_USERS)} as u
        where exists (select 1 from {ctx.rel(t.FCT_LISTENS)} as l where l.user_id = u.user_id)"""
    query = _without_lists(ctx, active, "user_id", "active users", "without_recommendations")
    return [Check(ctx.thresholds["recommendations.active_users_covered"], query, "share")]


def _play_next_coverage(ctx: BuildContext) -> list[Check]:
    catalog = f"select d.track_id from {ctx.rel(t.DIM_TRACKS)} as d"
    query = _without_lists(ctx, catalog, "track_id", "catalog tracks", "without_play_next")
    return [Check(ctx.thresholds["recommendations.catalog_tracks_covered"], query, "share")]


SUITES = (
    SuiteSpec(
        "recommendations",
        t.USER_TOP_TRACKS,
        _coverage,
        (t.DIM_USERS, t.FCT_LISTENS),
        stage=Stage.RECOMMENDATIONS,
    ),
    SuiteSpec(
        "play_next",
        t.SIMILAR_TRACKS,
        _play_next_coverage,
        (t.DIM_TRACKS,),
        stage=Stage.RECOMMENDATIONS,
    ),
)

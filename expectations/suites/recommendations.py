"""Suites of schema recommendations, run on the lists the ML step staged, before they are
published: every active user (a user of marts.dim_users with at least one listen) has
recommendations, and every catalog track (marts.dim_tracks, played or not) a "play next"."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.suites import BuildContext, Stage, SuiteSpec


def _without_lists(ctx: BuildContext, owners: str, key: str, subject: str, missing: str) -> str:
    """The share of `owners` (a query of distinct `key`s) with no row in the batch, named
    `subject` with the count column `missing`."""
    total = subject.replace(" ", "_")
    return f"""
        with owners as ({owners}),
        covered as (select distinct r.{key} from {{batch}} as r)
        select '{subject}' as subject,
               count(*) as {total},
               count(*) filter (where c.{key} is null) as {missing},
               {ctx.dialect.as_float(f"count(*) filter (where c.{key} is null)")}
                   / nullif(count(*), 0) as observed
        from owners as o
        left join covered as c on c.{key} = o.{key}"""


def _coverage(ctx: BuildContext) -> list[Check]:
    active = f"""
        select distinct l.user_id
        from {ctx.rel(t.FCT_LISTENS)} as l
        join {ctx.rel(t.DIM_USERS)} as u on u.user_id = l.user_id"""
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

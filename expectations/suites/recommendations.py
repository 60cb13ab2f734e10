"""Suites of schema recommendations, run on the lists the ML step staged, before they are
published: every active user (a user of marts.dim_users with at least one listen) has
recommendations, and every catalog track (marts.dim_tracks, played or not) a "play next"."""

from __future__ import annotations

from expectations import tables as t
from expectations.checks import Check
from expectations.suites import BuildContext, Stage, SuiteSpec


def _coverage(ctx: BuildContext) -> list[Check]:
    query = f"""
        with active as (
            select distinct l.user_id
            from {ctx.rel(t.FCT_LISTENS)} as l
            join {ctx.rel(t.DIM_USERS)} as u on u.user_id = l.user_id
        ),
        covered as (select distinct r.user_id from {{batch}} as r)
        select 'active users' as subject,
               count(*) as active_users,
               count(*) filter (where c.user_id is null) as without_recommendations,
               {ctx.dialect.as_float("count(*) filter (where c.user_id is null)")}
                   / nullif(count(*), 0) as observed
        from active as a
        left join covered as c on c.user_id = a.user_id"""
    return [
        Check(
            ctx.thresholds["recommendations.active_users_covered"],
            query,
            "share",
            "Share of active users without recommendations",
            "active users without recommendations",
        )
    ]


def _play_next_coverage(ctx: BuildContext) -> list[Check]:
    query = f"""
        with covered as (select distinct r.track_id from {{batch}} as r)
        select 'catalog tracks' as subject,
               count(*) as catalog_tracks,
               count(*) filter (where c.track_id is null) as without_play_next,
               {ctx.dialect.as_float("count(*) filter (where c.track_id is null)")}
                   / nullif(count(*), 0) as observed
        from {ctx.rel(t.DIM_TRACKS)} as d
        left join covered as c on c.track_id = d.track_id"""
    return [
        Check(
            ctx.thresholds["recommendations.catalog_tracks_covered"],
            query,
            "share",
            "Share of catalog tracks without a play-next list",
            "catalog tracks without a play-next list",
        )
    ]


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

"""Suite of schema recommendations, run on the lists the ML step staged, before they are
published: every active user (a user of marts.dim_users with at least one listen) has
recommendations."""

from __future__ import annotations

from great_expectations.expectations import Expectation

from expectations import tables as t
from expectations.checks import metric_checks
from expectations.suites import AssetSpec, BuildContext, Stage, SuiteSpec


def _coverage(ctx: BuildContext) -> list[Expectation]:
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
    return metric_checks(
        ctx.thresholds["recommendations.active_users_covered"],
        query=query,
        unit="share",
        description="Share of active users without recommendations",
        alert="active users without recommendations",
    )


SUITES = (
    SuiteSpec(
        "recommendations",
        AssetSpec("user_top_tracks", table=t.USER_TOP_TRACKS),
        Stage.RECOMMENDATIONS,
        (t.USER_TOP_TRACKS, t.DIM_USERS, t.FCT_LISTENS),
        _coverage,
    ),
)

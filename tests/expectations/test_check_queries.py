"""The checks rewritten for speed measure what the queries they replaced measured: both run on
the same seeded warehouses (clean, and broken in the ways each check looks for) and must return
the same rows. The replaced queries are kept here, verbatim, as the reference."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from expectations import tables as t
from expectations.engines import Engine
from expectations.suites import BuildContext, all_suites
from expectations.thresholds import load_thresholds
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import LIVE
from privacy.subjects import EMAIL, USER_ID, subject_hash, subject_hash_sql
from tests.expectations.conftest import Execute
from tests.expectations.seed import seed_clean

pytestmark = pytest.mark.integration

RUN = "20261126T100000Z-bbbbbb"


def _without_lists_before(owners: str, key: str, subject: str, missing: str, batch: str) -> str:
    total = subject.replace(" ", "_")
    return f"""
        with owners as ({owners}),
        covered as (select distinct r.{key} from {batch} as r)
        select '{subject}' as subject,
               count(*) as {total},
               count(*) filter (where c.{key} is null) as {missing},
               (count(*) filter (where c.{key} is null))::float8
                   / nullif(count(*), 0) as observed
        from owners as o
        left join covered as c on c.{key} = o.{key}"""


ACTIVE_USERS_BEFORE = _without_lists_before(
    f"select distinct l.user_id from {t.FCT_LISTENS} as l "
    f"join {t.DIM_USERS} as u on u.user_id = l.user_id",
    "user_id",
    "active users",
    "without_recommendations",
    t.USER_TOP_TRACKS,
)
PLAY_NEXT_BEFORE = _without_lists_before(
    f"select d.track_id from {t.DIM_TRACKS} as d",
    "track_id",
    "catalog tracks",
    "without_play_next",
    t.SIMILAR_TRACKS,
)
_SOURCES = {
    t.RAW_USERS: "id",
    t.RAW_LISTEN_HISTORY: "user_id",
    t.RAW_LISTEN_HISTORY_ITEMS: "user_id",
    t.DIM_USERS: "user_id",
    t.FCT_LISTENS: "user_id",
}
_IDS = "\n union all ".join(
    f"select '{table}' as subject, {column} as user_id from (select distinct {column}"
    f" from {table}) as d"
    for table, column in _SOURCES.items()
)
SUPPRESSED_BEFORE = f"""
    with ids as ({_IDS}
    union all
    select 'raw._rejected' as subject, cast(record_key as bigint) as user_id
    from (select distinct record_key from raw._rejected
          where endpoint <> 'tracks' and record_key ~ '^[0-9]{{1,18}}$') as r
    ),
    hits as (
        select ids.subject from ids cross join privacy.salt as salt
        where {subject_hash_sql(USER_ID, "ids.user_id")} in
            (select b.subject_hash from privacy.suppressions as b where b.kind = 'user_id')
        union all
        select 'raw.users (e-mail)' from raw.users as u cross join privacy.salt as salt
        where {subject_hash_sql(EMAIL, "u.email")} in
            (select b.subject_hash from privacy.suppressions as b where b.kind = 'email')
    )
    select s.subject, count(h.subject) as observed
    from (select distinct subject from ids
          union select 'raw.users (e-mail)') as s
    left join hits as h on h.subject = s.subject
    group by s.subject"""
BEFORE = {
    ("recommendations", "active_users_covered"): ACTIVE_USERS_BEFORE,
    ("play_next", "catalog_tracks_covered"): PLAY_NEXT_BEFORE,
    ("privacy.suppressed", "suppressed_users_absent"): SUPPRESSED_BEFORE,
}
SALT = bytes.fromhex("00112233")  # the seed's


@pytest.fixture
def warehouse(fresh_warehouse: ConnectionURL) -> ConnectionURL:
    seed_clean(fresh_warehouse, RUN)
    return fresh_warehouse


def _suppress(sql: Execute, kind: str, value: object) -> None:
    sql(
        "insert into privacy.suppressions values (%s, %s, 1)",
        (subject_hash(SALT, kind, value), kind),
    )


BREAKS: dict[str, Callable[[Execute], None]] = {
    "clean": lambda sql: None,
    "users and tracks without lists": lambda sql: (
        sql("delete from recommendations.user_top_tracks where user_id in (4, 5)"),
        sql("insert into marts.dim_tracks values (1000001, 60), (1000002, 60)"),
        sql("delete from recommendations.similar_tracks where track_id = 3"),
    ),
    "listens of a user dim_users lacks, a user without listens": lambda sql: (
        sql("insert into marts.fct_listens values (990001, 1, 3), (990001, 2, 1)"),
        sql("delete from marts.fct_listens where user_id = 7"),
        sql("delete from recommendations.user_top_tracks where user_id in (7, 8)"),
    ),
    "no lists at all": lambda sql: (
        sql("delete from recommendations.user_top_tracks"),
        sql("delete from recommendations.similar_tracks"),
    ),
    "no active user, no catalog track": lambda sql: (
        sql("delete from marts.fct_listens"),
        sql("delete from marts.dim_tracks"),
    ),
    "suppressed users back, a quarantined user record": lambda sql: (
        _suppress(sql, USER_ID, 4),
        _suppress(sql, USER_ID, 990002),  # nowhere
        sql(
            "insert into raw._rejected (endpoint, page, record_key, payload, reason) values "
            "('users', 1, '4', '{}', 'x'), ('tracks', 1, '5', '{}', 'x'), "
            "('listen_history', 1, 'abc', '{}', 'x')"
        ),
    ),
    "an e-mail suppressed, nothing by id; no user record quarantined": lambda sql: (
        _suppress(sql, EMAIL, "No.Such@Example.com"),
        sql(
            "insert into raw._rejected (endpoint, page, record_key, payload, reason) values "
            "('tracks', 1, '5', '{}', 'x'), ('users', 1, 'abc', '{}', 'x')"
        ),
    ),
    "empty raw tables": lambda sql: (
        sql("delete from raw.listen_history__items"),
        sql("delete from raw.listen_history"),
        _suppress(sql, USER_ID, 4),
    ),
}


@pytest.mark.parametrize("state", list(BREAKS))
def test_the_rewritten_checks_return_what_the_replaced_queries_did(
    warehouse: ConnectionURL, sql: Execute, state: str
) -> None:
    BREAKS[state](sql)
    ctx = BuildContext(RUN, load_thresholds())
    specs = {spec.name: spec for spec in all_suites()}
    with psycopg.connect(warehouse.url(), autocommit=True) as conn:
        engine = Engine(warehouse, LIVE, conn)
        for (suite, name), before in BEFORE.items():
            spec = specs[suite]
            (check,) = [c for c in spec.build(ctx) if c.name == name]
            now = engine.rows(check.query.format(batch=spec.batch(ctx)))
            expected = engine.rows(before)
            assert sorted(now, key=repr) == sorted(expected, key=repr), (suite, name)

"""marts.fct_recommendation_uptake on the simulator's data: the real ingestion and dbt build,
lists published as ml/ publishes them (as mvx_ml, replaced whole), impressions inserted as the
serving API does (as mvx_app). The mart is compared with the definition computed here in Python
from the warehouse's own inputs; the lists' copy survives a full refresh.

Day 0 is built before anything is published; run-a's lists then give half of the users with
listens coming on day 1 one of those tracks (peeked from the API), and the API "serves" a third
of them another one; day 1 is loaded and built.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
import yaml
from psycopg import sql

from dbt_project.contracts import ENFORCED_TAG
from dbt_project.runner import PROJECT_DIR
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import APP, ML
from moovitamix.simulator_process import running_simulator
from tests.dbt_project.conftest import SIMULATOR_ARGS
from tests.dbt_project.dbt_helpers import build, fetch_all, ingest, query, set_day

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVING_YML = PROJECT_DIR / "models" / "staging" / "serving" / "_serving__models.yml"

K = 3
UPTAKE = (
    "select user_id, listen_date, model_run_id, new_tracks, hits_published, hits_served,"
    " baseline_hits from marts.fct_recommendation_uptake"
)
KEPT = (
    "select model_run_id, user_id, track_ids::text"
    " from staging.stg_recommendations__published_lists"
)
Row = tuple[int, date, str, int, int, int, int]


@dataclass
class Uptake:
    url: ConnectionURL
    before_any_list: tuple[int, int]  # (kept lists, mart rows) after day 0
    day1: set[Row]
    expected: set[Row]
    kept: set[tuple]
    rebuilt: set[Row]
    kept_rebuilt: set[tuple]
    full_refresh: set[Row]
    kept_full_refresh: set[tuple]
    run_b: set[tuple]  # run-b's lists as published, in the copy's form
    copy_indexes: list[str]  # the copy's indexes, as pg_indexes defines them


def as_role(url: ConnectionURL, role: str, *statements: tuple[str, object]) -> None:
    with psycopg.connect(url.url(), autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        for statement, params in statements:
            if isinstance(params, list):
                conn.cursor().executemany(statement, params)
            else:
                conn.execute(statement, params)


def publish(url: ConnectionURL, model_run_id: str, lists: dict[int, list[int]]) -> datetime:
    """The lists as ml/ leaves them: a new table in place of the old one, owned by mvx_ml.
    Inserted last rank first: the copy's lists are in rank order whatever the table's order."""
    generated_at = datetime.now(UTC)
    rows = [
        (user, rank, track, 1.0 / rank, "model", model_run_id, generated_at)
        for user, tracks in lists.items()
        for rank, track in enumerate(tracks, start=1)
    ][::-1]
    as_role(
        url,
        ML,
        ("drop table if exists recommendations.user_top_tracks", None),
        (
            "create table recommendations.user_top_tracks (user_id bigint not null, rank integer"
            " not null, track_id bigint not null, score double precision not null, source text"
            " not null, model_run_id text not null, generated_at timestamptz not null,"
            " primary key (user_id, rank))",
            None,
        ),
        ("insert into recommendations.user_top_tracks values (%s, %s, %s, %s, %s, %s, %s)", rows),
    )
    return generated_at


def histories(api_url: str) -> dict[int, set[int]]:
    return {h["user_id"]: set(h["items"]) for h in fetch_all(api_url, "listen_history")}


def expected_uptake(url: ConnectionURL, k: int) -> set[Row]:
    """The mart's definition, from its inputs: fct_listens, the kept lists, the impressions and
    the listen-history versions (the data's clock)."""
    listens = query(url, "select user_id, track_id, first_seen_at from marts.fct_listens")
    versions = query(
        url,
        "select valid_from, coalesce(updated_at, valid_from)"
        " from staging.stg_moovitamix__listen_history_versions",
    )
    kept = query(
        url,
        "select model_run_id, generated_at, user_id, track_ids"
        " from staging.stg_recommendations__published_lists",
    )
    served = query(
        url,
        "select served_at, user_id, track_ids from monitoring.recommendation_impressions"
        " where user_id is not null",
    )
    runs = sorted({(generated_at, run) for run, generated_at, _, _ in kept})
    lists = {(run, user): set(tracks) for run, _, user, tracks in kept}
    rows = set()
    by_user_day: dict[tuple[int, date], list[int]] = defaultdict(list)
    for user, track, first_seen_at in listens:
        by_user_day[(user, first_seen_at.astimezone(UTC).date())].append(track)
    for (user, day), tracks in by_user_day.items():
        day_start = datetime.combine(day, datetime.min.time(), UTC)
        in_place = [
            (generated_at, run, ends)
            for generated_at, run in runs
            if (ends := max(t for loaded, t in versions if loaded <= generated_at)) < day_start
        ]
        if not in_place:
            continue
        generated_at, run, ends = max(in_place)
        later = [g for g, _ in runs if g > generated_at]
        until = min(later) if later else datetime.max.replace(tzinfo=UTC)
        shown = {
            t for at, u, ids in served if u == user and generated_at <= at < until for t in ids
        }
        listeners = Counter(t for _, t, seen in listens if seen <= ends)
        ranking = sorted(listeners, key=lambda t: (-listeners[t], t))
        heard = {t for u, t, seen in listens if u == user and seen <= ends}
        popular = [t for t in ranking if t not in heard][:k]
        rows.add((
            user, day, run, len(tracks),
            sum(t in lists.get((run, user), ()) for t in tracks),
            sum(t in shown for t in tracks),
            sum(t in popular for t in tracks),
        ))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def uptake(dbt_env: ConnectionURL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uptake]:
    url = dbt_env
    log = tmp_path_factory.mktemp("uptake-simulator") / "simulator.log"
    with running_simulator(list(SIMULATOR_ARGS), log_path=log) as api:
        ingest(api)
        build(url)
        before = (len(query(url, KEPT)), len(query(url, UPTAKE)))

        day0 = histories(api)
        set_day(api, 1)
        after = histories(api)
        coming = {u: sorted(after[u] - day0[u]) for u in day0.keys() & after.keys()}
        coming = {u: tracks for u, tracks in coming.items() if tracks}
        users = [r[0] for r in query(url, "select user_id from marts.dim_users order by 1")]
        tracks = [r[0] for r in query(url, "select track_id from marts.dim_tracks order by 1")]
        lists = {}
        for n, user in enumerate(users):
            picked = coming[user][:1] if user in coming and n % 2 == 0 else []
            fill = (t for t in tracks if t not in day0.get(user, ()) and t not in picked)
            lists[user] = picked + list(itertools.islice(fill, K - len(picked)))
        generated_at = publish(url, "run-a", lists)
        shown = [u for n, u in enumerate(sorted(coming)) if u in lists and n % 3 == 0]
        impressions = [(generated_at + timedelta(seconds=1), u, [coming[u][-1]]) for u in shown]
        early = next(u for u in shown if len(coming[u]) > 1)
        impressions += [
            # before run-a's lists were published: not the lists of the day before day 1
            (generated_at - timedelta(hours=1), early, coming[early]),
            # a play-next list (no user)
            (generated_at + timedelta(seconds=2), None, [t for ts in coming.values() for t in ts]),
        ]
        as_role(
            url,
            APP,
            (
                "insert into monitoring.recommendation_impressions"
                " (served_at, user_id, model_run_id, source, route, k, track_ids)"
                " values (%s, %s, 'run-a', 'fold_in', 'POST /users/{user_id}/recommendations',"
                " 1, %s)",
                impressions,
            ),
        )

        ingest(api)
        build(url, unit_tests=True)  # the mart's unit test too
        day1, kept, expected = (
            set(query(url, UPTAKE)),
            set(query(url, KEPT)),
            expected_uptake(url, K),
        )
        build(url)
        rebuilt, kept_rebuilt = set(query(url, UPTAKE)), set(query(url, KEPT))
        # run-b: a list per user, to compare with the copy whole
        run_b = {user: tracks[user % 7 : user % 7 + K] for user in users}
        publish(url, "run-b", run_b)
        build(url, full_refresh=True)
        copy_indexes = [
            r[0]
            for r in query(
                url,
                "select indexdef from pg_indexes where schemaname = 'staging'"
                " and tablename = 'stg_recommendations__published_lists'",
            )
        ]
        yield Uptake(
            url, before, day1, expected, kept, rebuilt, kept_rebuilt,
            set(query(url, UPTAKE)), set(query(url, KEPT)),
            {("run-b", user, "{" + ",".join(map(str, ts)) + "}") for user, ts in run_b.items()},
            copy_indexes,
        )  # fmt: skip


def test_nothing_published_yet_builds_an_empty_mart(uptake: Uptake) -> None:
    assert uptake.before_any_list == (0, 0)


def test_the_mart_counts_what_its_definition_says(uptake: Uptake) -> None:
    assert uptake.day1 == uptake.expected
    days = {row[1] for row in uptake.day1}
    assert days == {date(2026, 1, 1)}, "day 1's listens, against run-a's lists"
    totals = [sum(row[i] for row in uptake.day1) for i in range(3, 7)]
    new, published, served, baseline = totals
    assert 0 < published < new and 0 < served < new and baseline < new, totals


def test_rebuilds_change_nothing_and_the_lists_copy_outlives_a_full_refresh(
    uptake: Uptake,
) -> None:
    assert {row[0] for row in uptake.kept} == {"run-a"}
    assert uptake.rebuilt == uptake.day1
    assert uptake.kept_rebuilt == uptake.kept, "a run's lists are kept once"
    assert uptake.full_refresh == uptake.day1
    assert {row[0] for row in uptake.kept_full_refresh} == {"run-a", "run-b"}
    assert uptake.kept <= uptake.kept_full_refresh, "run-a's lists are still there"
    assert uptake.kept_full_refresh - uptake.kept == uptake.run_b, "run-b's lists, as published"


def test_the_copy_is_unique_by_run_and_user_through_an_index(uptake: Uptake) -> None:
    """The index the copy's probe of a kept run and the mart's lookup of a user's list read;
    added by a post-hook, so a copy created before it gets it at its next build. It proves the
    copy's uniqueness test, which Postgres builds therefore leave out (ENFORCED_TAG)."""
    assert any(
        "UNIQUE INDEX" in d and d.endswith("(model_run_id, user_id)") for d in uptake.copy_indexes
    ), uptake.copy_indexes
    models = yaml.safe_load(SERVING_YML.read_text())["models"]
    copy = next(m for m in models if m["name"] == "stg_recommendations__published_lists")
    unique = [t["unique_combination_of_columns"] for t in copy["data_tests"]]
    columns = [t["arguments"]["combination_of_columns"] for t in unique]
    assert columns == [["model_run_id", "user_id"]]
    assert [ENFORCED_TAG in t["config"]["tags"] for t in unique] == [True]

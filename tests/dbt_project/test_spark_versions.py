"""The Spark target's history: dlt's SCD2 versions derived from the lake's snapshots.

A hand-written lake (lake_files.py) of three completed snapshots and one incomplete load, with
new, changed, deleted, re-appeared and flip-flopping records; dbt builds the staging version
models on a real local Spark (the test process's one session), and the versions must be
exactly those that dlt's SCD2 keeps on Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dbt_project.results import BuildResult
from dbt_project.runner import run_build
from moovitamix.settings import Settings
from tests.dbt_project.lake_files import Snapshot, record_hash, write_snapshot

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AT = [datetime(2026, 1, day, 6, 0, tzinfo=UTC) for day in (1, 2, 3, 4)]
LOADS = ["1767247200.1", "1767333600.2", "1767420000.3", "1767506400.4"]
CREATED = datetime(2025, 12, 1, tzinfo=UTC)
ENV = (
    "DBT_TARGET_PATH",
    "DBT_LOG_PATH",
    "MOOVITAMIX_RUN_ID",
    "MVX_DBT_SPARK_CONF",
    "MVX_DBT_LAKE_URL",
)
MODELS = [
    "stg_moovitamix__users_changelog",
    "stg_moovitamix__tracks_changelog",
    "stg_moovitamix__listen_history_changelog",
    "stg_moovitamix__listen_history_items_changelog",
    "stg_moovitamix__user_versions",
    "stg_moovitamix__users",
    "stg_moovitamix__track_versions",
    "stg_moovitamix__listen_history_versions",
    "stg_moovitamix__listen_history_item_versions",
]


def _user(user_id: int, name: str) -> dict:
    return {
        "id": user_id,
        "first_name": f" {name} ",
        "last_name": "Doe",
        "email": f"User{user_id}@Example.org ",
        "gender": "Female",
        "favorite_genres": "Rock",
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def _track(track_id: int, duration: str) -> dict:
    return {
        "id": track_id,
        "name": "Song",
        "artist": "Band",
        "songwriters": "A, B",
        "duration": duration,
        "genres": "Rock, Jazz",
        "album": "LP",
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def _history(user_id: int, items: list[int]) -> dict:
    return {"user_id": user_id, "items": items, "created_at": CREATED, "updated_at": CREATED}


# user id -> its name in each snapshot (None: absent; a new name is a new record_hash)
USERS = {
    1: ["a", "a", "a", "z"],  # unchanged (the 4th load, incomplete, must not count)
    2: ["a", "b", "b", None],  # changed
    3: ["a", None, "a", None],  # deleted, then back with the same content
    4: ["a", "a", None, None],  # deleted
    5: [None, "a", "a", None],  # new on day 2
    6: ["a", "b", "a", None],  # changed, then changed back
    7: [None, None, None, "a"],  # only in the incomplete load
}
HISTORIES = {
    1: [[10, 11], [10, 11], [10, 11, 10], [1]],
    2: [[10], None, [10], None],
}


def _write_load(lake: Path, number: int) -> None:
    load_id, at = LOADS[number], AT[number]
    write_snapshot(
        lake,
        Snapshot(
            load_id,
            at,
            tracks=[_track(10, "03:41" if number < 2 else "1:02:03"), _track(11, "bad")],
            users=[
                _user(user_id, names[number])
                for user_id, names in USERS.items()
                if names[number] is not None
            ],
            listen_history=[
                _history(user_id, items[number])
                for user_id, items in HISTORIES.items()
                if items[number] is not None
            ],
            completed=number < 3,
        ),
    )


@pytest.fixture(scope="module", params=["all loads, one build", "a build after each load"])
def built(
    request: pytest.FixtureRequest,
    spark: SparkSession,
    spark_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BuildResult, SparkSession]]:
    """The same lake built at once (a first build, or a full refresh) or load by load (the
    daily builds, each adding to the history what its load changed): the same versions."""
    tmp = tmp_path_factory.mktemp("spark-versions")
    lake = tmp / "lake"
    settings = replace(spark_settings, lake_url=lake.as_uri())
    builds = [[0, 1, 2, 3]] if request.param.startswith("all") else [[0], [1], [2], [3]]
    with pytest.MonkeyPatch.context() as mp:
        for key in ENV:
            mp.setenv(key, "")
        mp.setenv("DBT_TARGET_PATH", str(tmp / "target"))
        mp.setenv("DBT_LOG_PATH", str(tmp / "logs"))
        for number, loads in enumerate(builds):
            for load in loads:
                _write_load(lake, load)
            result = run_build(settings, f"run-spark-versions-{number}", None, select=MODELS)
            assert result.success, result.summary()
        yield result, spark
    for database in ("raw", "staging"):
        spark.sql(f"drop database if exists {database} cascade")


def _hash(user_id: int, name: str) -> str:
    return record_hash(_user(user_id, name))


def test_build_passes(built) -> None:
    result, _ = built
    assert result.success, result.summary()
    assert {n.name for n in result.models} == set(MODELS)


def test_user_versions_are_runs_of_consecutive_snapshots_with_one_hash(built) -> None:
    _, spark = built
    rows = spark.sql(
        "select user_id, record_hash, valid_from, valid_to, is_current, load_id "
        "from staging.stg_moovitamix__user_versions"
    ).collect()
    got = {tuple(r) for r in rows}
    s1, s2, s3 = (at.replace(tzinfo=None) for at in AT[:3])  # Spark: UTC, naive
    l1, l2, l3 = LOADS[:3]
    expected = {
        (1, _hash(1, "a"), s1, None, True, l1),
        (2, _hash(2, "a"), s1, s2, False, l1),
        (2, _hash(2, "b"), s2, None, True, l2),
        (3, _hash(3, "a"), s1, s2, False, l1),
        (3, _hash(3, "a"), s3, None, True, l3),
        (4, _hash(4, "a"), s1, s3, False, l1),
        (5, _hash(5, "a"), s2, None, True, l2),
        (6, _hash(6, "a"), s1, s2, False, l1),
        (6, _hash(6, "b"), s2, s3, False, l2),
        (6, _hash(6, "a"), s3, None, True, l3),
    }
    assert got == expected
    assert len(rows) == len(expected)


def test_staging_casts_and_cleans_on_spark(built) -> None:
    _, spark = built
    row = spark.sql(
        "select first_name, email, created_at from staging.stg_moovitamix__users where user_id = 1"
    ).collect()[0]
    assert tuple(row) == ("a", "user1@example.org", CREATED.replace(tzinfo=None))
    current = spark.sql("select user_id from staging.stg_moovitamix__users").collect()
    assert sorted(r.user_id for r in current) == [1, 2, 3, 5, 6]
    tracks = spark.sql(
        "select track_id, duration_seconds, valid_from, valid_to "
        "from staging.stg_moovitamix__track_versions"
    ).collect()
    s1, s3 = AT[0].replace(tzinfo=None), AT[2].replace(tzinfo=None)
    assert {tuple(r) for r in tracks} == {
        (10, 221, s1, s3),  # "03:41"
        (10, 3723, s3, None),  # "1:02:03"
        (11, None, s1, None),  # unparsable: null, not an error
    }


def test_listen_history_versions_and_their_items(built) -> None:
    _, spark = built
    versions = spark.sql(
        "select user_id, item_count, valid_from, valid_to, load_id "
        "from staging.stg_moovitamix__listen_history_versions"
    ).collect()
    s1, s2, s3 = (at.replace(tzinfo=None) for at in AT[:3])
    assert sorted(tuple(r) for r in versions) == [
        (1, 2, s1, s3, LOADS[0]),
        (1, 3, s3, None, LOADS[2]),
        (2, 1, s1, s2, LOADS[0]),
        (2, 1, s3, None, LOADS[2]),
    ]
    items = spark.sql(
        "select user_id, position, track_id, load_id "
        "from staging.stg_moovitamix__listen_history_item_versions"
    ).collect()
    assert sorted(tuple(r) for r in items) == [
        (1, 0, 10, LOADS[0]),
        (1, 0, 10, LOADS[2]),
        (1, 1, 11, LOADS[0]),
        (1, 1, 11, LOADS[2]),
        (1, 2, 10, LOADS[2]),
        (2, 0, 10, LOADS[0]),  # the same version served again later: listed once
    ]


def test_a_lake_with_no_completed_load_is_a_clear_error(
    spark: SparkSession, spark_settings: Settings, tmp_path: Path, monkeypatch
) -> None:
    """Transform before any ingestion (an empty lake, or only an interrupted load): one line
    that says what to run, not Spark's schema inference error."""
    lake = tmp_path / "lake"
    write_snapshot(
        lake,
        Snapshot(LOADS[0], AT[0], tracks=[_track(10, "03:41")], users=[], listen_history=[],
                 completed=False),
    )  # fmt: skip
    for key in ENV:
        monkeypatch.setenv(key, "")
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    try:
        for name, url in (
            ("empty", (tmp_path / "nothing").as_uri()),
            ("interrupted", lake.as_uri()),
        ):
            settings = replace(spark_settings, lake_url=url)
            result = run_build(settings, f"run-spark-no-load-{name}", None, select=MODELS)
            assert not result.success
            assert "holds no completed load: run the ingestion first" in result.summary()
            assert "infer schema" not in result.summary().lower()
    finally:
        spark.sql("drop database if exists raw cascade")

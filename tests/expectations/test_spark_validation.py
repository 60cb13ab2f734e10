"""The suites on the Spark engine: tiny raw and marts tables in a real local Spark, the control
plane (ingestion stats, run ledger, run metrics, staged lists, results) in a fresh Postgres.

A clean day passes every suite with the same 15 expectations as on Postgres, and its run
metrics equal those Postgres measures on the same marts; a broken day fails the same
expectations, at the same severities, as it would on Postgres; the recommendations suites check
the staged lists in Postgres against the active users and the catalog of the Spark marts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from expectations.engines import Engine, open_engine
from expectations.run_metrics import record_run_metrics
from expectations.spark_engine import SparkDialect
from expectations.suites import Stage, all_suites
from expectations.thresholds import load_thresholds
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import LIVE, Relations
from moovitamix.settings import Settings
from tests.expectations.conftest import Validator
from tests.expectations.seed import MARTS_DDL, ingestion_stats, ledger_run

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.integration, pytest.mark.spark]

RUN = "20261126T100000Z-bbbbbb"
PREVIOUS = "20261125T100000Z-aaaaaa"
SLOT = "marts_b"
DATABASES = ("raw", "marts", "marts_a", "marts_b")
STAGED = "recommendations.user_top_tracks__new"
STAGED_SIMILAR = "recommendations.similar_tracks__new"
# the daily run's view of its tables: the candidate slot, the staged lists
CANDIDATE = Relations(
    schemas={"marts": SLOT},
    tables={
        "recommendations.user_top_tracks": STAGED,
        "recommendations.similar_tracks": STAGED_SIMILAR,
    },
)
ALL_EXPECTATIONS = 15
USERS, TRACKS, LISTENS_PER_USER = 20, 10, 3
GENRES = ("rock", "pop")
# dlt load ids: an old completed load, the latest completed one, a newer one still loading
OLD_LOAD, LOAD, LOADING = "1764500000.100000", "1764586400.200000", "1764590000.300000"


def _drop_databases(spark: SparkSession) -> None:
    for database in DATABASES:
        spark.sql(f"drop database if exists {database} cascade")


@pytest.fixture
def lake(spark: SparkSession) -> Iterator[SparkSession]:
    """A clean Spark catalog before and after the test (the session is the process's)."""
    _drop_databases(spark)
    yield spark
    _drop_databases(spark)


@pytest.fixture
def spark_validate(spark_settings: Settings, gx_dir: Path, tmp_path: Path) -> Validator:
    settings = replace(spark_settings, logs_dir=tmp_path / "logs")
    return Validator(settings, gx_dir)


def _save(spark: SparkSession, table: str, rows: list[tuple[Any, ...]], schema: str) -> None:
    spark.createDataFrame(rows, schema).write.mode("overwrite").saveAsTable(table)


@dataclass(frozen=True)
class Day:
    """One day's tables, as rows: what raw's latest completed load and the marts hold."""

    users: int = USERS
    bad_emails: int = 0
    orphaned_listens: int = 1

    def user_ids(self) -> list[int]:
        return list(range(1, self.users + 1))

    def listens(self) -> list[tuple[int, int, int]]:
        return [
            (user, 1 + (user * 7 + k * 3) % TRACKS, 5)
            for user in self.user_ids()
            for k in range(LISTENS_PER_USER)
        ]

    def genre_features(self) -> list[tuple[int, str, int, float]]:
        return [
            (user, genre, 1, share)
            for user in self.user_ids()
            for genre, share in zip(GENRES, (0.75, 0.25), strict=True)
        ]


RAW_USERS = (
    "id bigint, first_name string, last_name string, email string, gender string, "
    "favorite_genres string, created_at timestamp, updated_at timestamp, record_hash string, "
    "_dlt_load_id string, _dlt_id string, _snapshot_at timestamp"
)
RAW_TRACKS = (
    "id bigint, name string, artist string, songwriters string, duration string, "
    "genres string, album string, created_at timestamp, updated_at timestamp, "
    "record_hash string, _dlt_load_id string, _dlt_id string, _snapshot_at timestamp"
)
RAW_HISTORY = (
    "user_id bigint, item_count int, created_at timestamp, updated_at timestamp, "
    "record_hash string, _dlt_load_id string, _dlt_id string, _snapshot_at timestamp"
)


def build_raw(spark: SparkSession, day: Day) -> None:
    """raw as the lake holds it: a snapshot per load. Only LOAD's rows are current: the old
    load and the unfinished one (no `_dlt_loads` row) hold rows every raw check would flag."""
    past = datetime.now(UTC) - timedelta(days=30)
    future = datetime.now(UTC) + timedelta(days=2)
    spark.sql("create database raw")

    def user(uid: int, load: str, email: str, at: datetime) -> tuple[Any, ...]:
        return (uid, "Ann", "Lee", email, "F", "Rock", at, at, "h", load, f"{load}-{uid}", at)

    users = [
        user(uid, LOAD, "not an email" if uid <= day.bad_emails else f"u{uid}@example.net", past)
        for uid in day.user_ids()
    ]
    users += [user(uid, OLD_LOAD, "old version", past) for uid in range(1, 5)]
    users += [user(uid, LOADING, "half loaded", future) for uid in range(1, 5)]
    _save(spark, "raw.users", users, RAW_USERS)

    def track(tid: int, load: str, duration: str, at: datetime) -> tuple[Any, ...]:
        return (tid, "song", "band", "me", duration, "rock", "lp", at, at, "h", load, f"t{tid}", at)

    tracks = [track(tid, LOAD, f"0{tid % 10}:07", past) for tid in range(1, TRACKS + 1)]
    tracks += [track(1, OLD_LOAD, "7 minutes", past), track(2, LOADING, "", future)]
    _save(spark, "raw.tracks", tracks, RAW_TRACKS)
    history = [
        (uid, LISTENS_PER_USER, past, past, f"l{uid}", LOAD, f"{LOAD}-l{uid}", past)
        for uid in day.user_ids()
    ]
    history += [(1, 1, future, future, "x", LOADING, "x", future)]
    _save(spark, "raw.listen_history", history, RAW_HISTORY)
    _save(
        spark,
        "raw._dlt_loads",
        [(load, "moovitamix", 0, past, "hash") for load in (OLD_LOAD, LOAD)],
        "load_id string, schema_name string, status int, inserted_at timestamp, "
        "schema_version_hash string",
    )


def build_marts(spark: SparkSession, day: Day, slot: str = SLOT) -> None:
    """The marts the checks read, built into a slot (their columns as dbt builds them)."""
    spark.sql(f"create database if not exists {slot}")
    _save(
        spark,
        f"{slot}.dim_users",
        [(uid, "Female", "rock") for uid in day.user_ids()],
        "user_id bigint, gender string, favorite_genre_id string",
    )
    _save(
        spark,
        f"{slot}.dim_tracks",
        [(tid, "song", 187) for tid in range(1, TRACKS + 1)],
        "track_id bigint, track_name string, duration_seconds int",
    )
    _save(
        spark,
        f"{slot}.fct_listens",
        day.listens(),
        "user_id bigint, track_id bigint, listen_count int",
    )
    _save(
        spark,
        f"{slot}.fct_orphaned_listens",
        [(1, 999_999, "unknown_track", day.orphaned_listens)],
        "user_id bigint, track_id bigint, orphan_reason string, listen_count int",
    )
    _save(
        spark,
        f"{slot}.user_genre_features",
        day.genre_features(),
        "user_id bigint, genre_id string, listen_count int, listen_share double",
    )


def control_plane(url: ConnectionURL, day: Day, covered_users: list[int]) -> None:
    """Postgres: the run's ingestion stats and ledger row, and the ML step's staged lists."""
    now = datetime.now(UTC)
    with psycopg.connect(url.url()) as conn:
        ingestion_stats(
            conn,
            RUN,
            started_at=now - timedelta(minutes=5),
            totals={"users": day.users, "tracks": TRACKS, "listen_history": day.users},
        )
        conn.execute(
            f"""create table {STAGED} (
                    user_id bigint not null, rank integer not null, track_id bigint not null,
                    score double precision not null, source text not null,
                    model_run_id text not null, generated_at timestamptz not null)"""
        )
        conn.cursor().executemany(
            f"insert into {STAGED} values (%s, %s, %s, 0.5, 'model', 'model-1', now())",
            [(user, rank, rank) for user in covered_users for rank in (1, 2)],
        )
        conn.execute(
            f"""create table {STAGED_SIMILAR} (
                    track_id bigint not null, rank integer not null,
                    similar_track_id bigint not null, score double precision not null,
                    model_run_id text not null, generated_at timestamptz not null)"""
        )
        conn.cursor().executemany(
            f"insert into {STAGED_SIMILAR} values (%s, 1, %s, 0.5, 'model-1', now())",
            [(track, 1 + track % TRACKS) for track in range(1, TRACKS + 1)],
        )
    ledger_run(url, RUN, now - timedelta(minutes=5), "running")


def postgres_baseline(url: ConnectionURL, day: Day) -> None:
    """Yesterday's successful run measured on Postgres marts holding `day`'s rows."""
    ledger_run(url, PREVIOUS, datetime.now(UTC) - timedelta(days=1), "success")
    with psycopg.connect(url.url()) as conn:
        conn.execute(MARTS_DDL)
        copy = conn.cursor().executemany
        copy("insert into marts.dim_users values (%s, 'Female')", [(u,) for u in day.user_ids()])
        copy("insert into marts.dim_tracks values (%s, 187)", [(t,) for t in range(1, 11)])
        copy("insert into marts.fct_listens values (%s, %s, %s)", day.listens())
        copy("insert into marts.user_genre_features values (%s, %s, %s, %s)", day.genre_features())
    with psycopg.connect(url.url(), autocommit=True) as conn:
        record_run_metrics(Engine(url, LIVE, conn), PREVIOUS, load_thresholds())


def _failed(outcome: Any) -> set[tuple[str, str, str]]:
    return {(r.suite, r.expectation, r.severity) for r in outcome.failures}


def _stored(url: ConnectionURL, run_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.url()) as conn:
        return conn.execute(
            "select suite, expectation, severity, success, observed_value "
            "from monitoring.validation_results where run_id = %s order by suite, expectation",
            (run_id,),
        ).fetchall()


def test_a_clean_day_passes_every_suite_on_spark(
    lake: SparkSession, fresh_warehouse: ConnectionURL, spark_validate: Validator
) -> None:
    day = Day()
    build_raw(lake, day)
    build_marts(lake, day)
    control_plane(fresh_warehouse, day, covered_users=day.user_ids())
    postgres_baseline(fresh_warehouse, day)

    committed = (spark_validate.gx_dir / "great_expectations.yml").read_text()
    outcome = spark_validate(fresh_warehouse, RUN, relations=CANDIDATE, build_docs=True)

    assert outcome.ok and not outcome.failures, outcome.failures
    assert len(outcome.results) == ALL_EXPECTATIONS and not outcome.skipped
    assert spark_validate.alerts == []
    rows = _stored(fresh_warehouse, RUN)
    assert len(rows) == ALL_EXPECTATIONS and all(row[3] for row in rows)
    observed = {(suite, name, severity): obs for suite, name, severity, _, obs in rows}
    # raw: only the latest completed load is current (20 users, not 20 + 4 + 4)
    ingestion = observed[("raw.ingestion", "row_count_matches_api_total", "error")]
    assert ingestion == "0 (listen_history); 0 (tracks); 0 (users)"
    assert observed[("marts.orphaned_listens", "orphaned_listens", "error")] == "0.33% (listens)"
    # measured on Spark, compared with Postgres' figures of the same marts: no change at all
    drop = observed[("marts.day_over_day", "volume_drop", "error")]
    assert "0.00% (marts.dim_users)" in drop and "0.00% (marts.fct_listens)" in drop
    assert observed[("marts.day_over_day", "genre_share_drift", "warning")].startswith("0.000")
    with psycopg.connect(fresh_warehouse.url()) as conn:
        figures = conn.execute(
            "select run_id, metric, subject, value from monitoring.run_metrics "
            "order by metric, subject, run_id"
        ).fetchall()
    by_run = {
        run: sorted((m, s, v) for r, m, s, v in figures if r == run) for run in (PREVIOUS, RUN)
    }
    assert by_run[RUN] == by_run[PREVIOUS] and len(by_run[RUN]) == 6
    # the same data docs site as on Postgres, with this run's pages
    assert outcome.data_docs is not None and "raw.ingestion" in outcome.data_docs.read_text()
    # GX validates the same Postgres table as on Postgres: the committed context is unchanged
    assert (spark_validate.gx_dir / "great_expectations.yml").read_text() == committed
    # nothing of the validation is left in the session
    assert not [t for t in lake.catalog.listTables() if t.isTemporary and t.name.startswith("pg_")]


def test_a_broken_day_fails_the_same_expectations_as_on_postgres(
    lake: SparkSession,
    spark_settings: Settings,
    fresh_warehouse: ConnectionURL,
    spark_validate: Validator,
) -> None:
    yesterday = Day()
    build_marts(lake, yesterday)
    ledger_run(fresh_warehouse, PREVIOUS, datetime.now(UTC) - timedelta(days=1), "success")
    with open_engine(spark_settings, fresh_warehouse, CANDIDATE) as engine:
        record_run_metrics(engine, PREVIOUS, load_thresholds())
    # today: half the users gone, orphaned listens at 10% of all listens, bad emails, and raw
    # holds 2 users fewer than the API reported
    today = Day(users=USERS // 2, bad_emails=2, orphaned_listens=17)
    build_raw(lake, today)
    build_marts(lake, today)
    control_plane(fresh_warehouse, replace(today, users=today.users + 2), today.user_ids())

    outcome = spark_validate(fresh_warehouse, RUN, stage=Stage.DATA, relations=CANDIDATE)

    assert _failed(outcome) == {
        ("raw.users", "email_format", "warning"),
        ("raw.ingestion", "row_count_matches_api_total", "error"),
        ("marts.orphaned_listens", "orphaned_listens", "warning"),
        ("marts.orphaned_listens", "orphaned_listens", "error"),
        ("marts.day_over_day", "volume_drop", "error"),
    }
    assert not outcome.ok and outcome.suites == sorted(
        ["raw.users", "raw.tracks", "raw.listen_history", "raw.ingestion",
         "marts.orphaned_listens", "marts.day_over_day"]
    )  # fmt: skip
    drop = next(r for r in outcome.failures if r.expectation == "volume_drop")
    assert "50.00% (marts.dim_users)" in drop.observed_value
    orphans = next(r for r in outcome.failed("error") if r.expectation == "orphaned_listens")
    assert orphans.observed_value == "10.18% (listens)"
    rows = _stored(fresh_warehouse, RUN)
    assert len(rows) == ALL_EXPECTATIONS - 2  # the recommendations suites run after ML
    assert {(s, e, sev) for s, e, sev, success, _ in rows if not success} == _failed(outcome)
    # one alert per failed check: the orphans' warning is implied by its error
    assert sorted(a.severity for a in spark_validate.alerts) == ["error"] * 3 + ["warning"]


def test_the_recommendations_suite_checks_the_lists_against_the_spark_marts(
    lake: SparkSession, fresh_warehouse: ConnectionURL, spark_validate: Validator
) -> None:
    """Outside the daily run (`make validate`): the published marts are the views of `marts`
    over a slot, the lists the published ones; in the daily run the candidate and staged ones."""
    day = Day()
    build_marts(lake, day)
    lake.sql("create database marts")
    for table in ("dim_users", "dim_tracks", "fct_listens"):
        lake.sql(f"create view marts.{table} as select * from {SLOT}.{table}")
    covered = day.user_ids()[:-1]  # the ML step left one active user without a list
    control_plane(fresh_warehouse, day, covered_users=covered)

    staged = spark_validate(fresh_warehouse, RUN, stage=Stage.RECOMMENDATIONS, relations=CANDIDATE)
    assert _failed(staged) == {("recommendations", "active_users_covered", "error")}
    (failure,) = staged.failures
    assert failure.observed_value == "5.00% (active users)"
    subject = failure.observed["subjects"][0]
    assert (subject["active_users"], subject["without_recommendations"]) == (20, 1)

    with psycopg.connect(fresh_warehouse.url()) as conn:
        conn.execute(
            f"create table recommendations.user_top_tracks as select * from {STAGED}; "
            "insert into recommendations.user_top_tracks "
            "values (20, 1, 1, 0.5, 'popularity', 'model-1', now()); "
            f"create table recommendations.similar_tracks as select * from {STAGED_SIMILAR}"
        )
    published = spark_validate(fresh_warehouse, RUN, stage=Stage.RECOMMENDATIONS, relations=LIVE)
    assert published.ok and not published.failures and len(published.results) == 2


def test_on_a_fresh_lake_the_suites_are_skipped_and_nothing_validated_fails(
    lake: SparkSession, fresh_warehouse: ConnectionURL, spark_validate: Validator
) -> None:
    """No raw, no marts, no ingestion yet: no check failed, but nothing was validated either,
    so the outcome fails closed (with no expectation's alert)."""
    outcome = spark_validate(fresh_warehouse, RUN, relations=CANDIDATE)
    assert outcome.results == () and outcome.validated_nothing and not outcome.ok
    skipped = dict(outcome.skipped)
    # every suite that runs on Spark (the suppression suite reads Postgres' tables: not here)
    assert set(skipped) == {spec.name for spec in all_suites() if spec.runs_on(SparkDialect())}
    assert "privacy.suppressed" not in skipped
    assert "raw.users" in skipped["raw.users"]
    assert spark_validate.alerts == []


def test_a_check_whose_spark_query_raises_could_not_run_and_fails_at_its_severity(
    lake: SparkSession,
    fresh_warehouse: ConnectionURL,
    spark_validate: Validator,
) -> None:
    day = Day()
    build_raw(lake, day)
    control_plane(fresh_warehouse, day, covered_users=[])
    with psycopg.connect(fresh_warehouse.url()) as conn:
        conn.execute(
            "alter table monitoring.ingestion_stats rename column carried_forward to carried"
        )

    outcome = spark_validate(fresh_warehouse, RUN, suites=["raw.ingestion"])

    assert _failed(outcome) == {("raw.ingestion", "row_count_matches_api_total", "error")}
    (check,) = outcome.failures
    assert check.could_not_run is not None and "carried_forward" in check.could_not_run
    assert "\n" not in check.could_not_run
    assert check.observed_value == f"could not run: {check.could_not_run}"
    (alert,) = spark_validate.alerts
    assert alert.title.startswith("check row_count_matches_api_total could not run: ")

"""The two engines build the same marts: the simulator's data ingested into Postgres (schema
raw, dlt scd2) and into the Parquet lake (snapshots), `dbt build` on each target, and every
interface mart compared by row count and per-column checksums, on two days in a row (the
second day's data is the simulator's next day: new, edited and deleted records, grown
histories), so that the history derived from the lake's snapshots is compared too.

Left out of the comparison: `fct_listens.run_id` (the run that last changed a row: Postgres
merges incrementally, Spark rebuilds the table; see dbt_project/README.md). The instants of the
ingestion runs themselves (validity boundaries) are compared as the run's rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from dbt_project.results import BuildResult
from dbt_project.runner import run_build
from ingestion.config import IngestionConfig
from ingestion.pipeline import run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import PROJECT_ROOT, Settings, load_settings
from moovitamix.simulator_process import running_simulator
from moovitamix.warehouse import open_warehouse
from tests.conftest import create_warehouse
from tests.parity.checksums import column_digests, utc_boundaries

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

SIMULATOR_ARGS = ["--seed", "7", "--users", "300", "--tracks", "200", "--profile", "realistic"]
INTERFACE_MARTS = (
    "dim_users",
    "dim_tracks",
    "dim_genres",
    "bridge_track_genres",
    "bridge_user_favorite_genres",
    "fct_listens",
    "user_genre_features",
    "track_popularity",
)
NOT_COMPARED = {("fct_listens", "run_id")}
ENV = (
    "WAREHOUSE_URL",
    "MOOVITAMIX_DATA_DIR",
    "MOOVITAMIX_ENGINE",
    "LAKE_URL",
    "MOOVITAMIX_RUN_ID",
    "DBT_TARGET_PATH",
    "DBT_LOG_PATH",
    "MVX_DBT_HOST",
    "MVX_DBT_PORT",
    "MVX_DBT_USER",
    "MVX_DBT_PASSWORD",
    "MVX_DBT_DATABASE",
    "MVX_DBT_ROLE",
    "MVX_DBT_SPARK_CONF",
    "MVX_DBT_LAKE_URL",
)
PG_BOUNDARIES = " union ".join(
    f"select _dlt_valid_from from raw.{t} union select _dlt_valid_to from raw.{t}"
    for t in ("users", "tracks", "listen_history")
)
SPARK_BOUNDARIES = " union ".join(
    f"select _snapshot_at from raw.{t}" for t in ("users", "tracks", "listen_history")
)


@dataclass
class Day:
    postgres: BuildResult
    spark: BuildResult
    digests: dict[str, tuple[dict[str, str], dict[str, str]]]  # mart -> (postgres, spark)


def _columns(url: ConnectionURL, table: str) -> list[str]:
    with psycopg.connect(url.url()) as conn:
        rows = conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'marts' and table_name = %s order by column_name",
            (table,),
        ).fetchall()
    return [r[0] for r in rows if (table, r[0]) not in NOT_COMPARED]


def _postgres_digests(url: ConnectionURL, table: str) -> tuple[list[str], dict[str, str]]:
    columns = _columns(url, table)
    with psycopg.connect(url.url()) as conn:
        boundaries = utc_boundaries(
            r[0] for r in conn.execute(PG_BOUNDARIES).fetchall() if r[0] is not None
        )
        rows = conn.execute(f"select {', '.join(columns)} from marts.{table}").fetchall()
    return columns, column_digests(columns, rows, boundaries)


def _spark_digests(spark: SparkSession, table: str, columns: list[str]) -> dict[str, str]:
    boundaries = utc_boundaries(
        row["_snapshot_at"] for row in spark.sql(SPARK_BOUNDARIES).toArrow().to_pylist()
    )
    data = spark.sql(f"select {', '.join(columns)} from marts.{table}").toArrow().to_pylist()
    rows = [tuple(row[c] for c in columns) for row in data]
    return column_digests(columns, rows, boundaries)


def _ingest_lake(settings: Settings, api_url: str) -> None:
    """The lake writer, through its command line (the interface the daily run uses)."""
    env = {**os.environ, "MOOVITAMIX_API_URL": api_url, "MOOVITAMIX_ENGINE": "postgres"}
    command = [sys.executable, "-m", "ingestion", "--destination", "filesystem"]
    command += ["--bucket-url", settings.lake, "--no-progress", "--concurrency", "4"]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _day(
    url: ConnectionURL,
    postgres: Settings,
    spark_engine: Settings,
    spark: SparkSession,
    api_url: str,
) -> Day:
    run_id = new_run_id()
    run_ingestion(postgres, run_id, api_url=api_url, config=IngestionConfig(progress=False))
    _ingest_lake(spark_engine, api_url)
    on_postgres = run_build(postgres, run_id, open_warehouse(postgres))
    on_spark = run_build(spark_engine, run_id, None)
    digests = {}
    if on_postgres.success and on_spark.success:
        for mart in INTERFACE_MARTS:
            columns, pg = _postgres_digests(url, mart)
            digests[mart] = (pg, _spark_digests(spark, mart, columns))
    return Day(on_postgres, on_spark, digests)


@pytest.fixture(scope="module")
def days(
    admin_url: ConnectionURL,
    spark: SparkSession,
    spark_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Day]]:
    tmp = tmp_path_factory.mktemp("parity")
    url = create_warehouse(admin_url, "mvx_parity")
    with pytest.MonkeyPatch.context() as mp:
        for key in ENV:
            mp.setenv(key, "")
        mp.setenv("WAREHOUSE_URL", url.url())
        mp.setenv("MOOVITAMIX_DATA_DIR", str(tmp / "data"))
        mp.setenv("DBT_TARGET_PATH", str(tmp / "target"))
        mp.setenv("DBT_LOG_PATH", str(tmp / "logs"))
        postgres = load_settings()
        spark_engine = replace(spark_settings, lake_url=(tmp / "lake").as_uri())
        with running_simulator(SIMULATOR_ARGS, log_path=tmp / "simulator.log") as api_url:
            first = _day(url, postgres, spark_engine, spark, api_url)
            httpx.post(f"{api_url}/_admin/state", json={"day": 1}, timeout=120).raise_for_status()
            second = _day(url, postgres, spark_engine, spark, api_url)
        yield [first, second]
    for database in ("raw", "staging", "marts"):
        spark.sql(f"drop database if exists {database} cascade")


def _differences(day: Day) -> dict[str, Any]:
    found = {}
    for mart, (pg, sp) in day.digests.items():
        differing = sorted(c for c in pg if pg[c] != sp.get(c))
        if differing:
            found[mart] = {c: (pg[c], sp.get(c)) for c in differing}
    return found


@pytest.mark.parametrize("number", [0, 1], ids=["day1", "day2"])
def test_both_builds_pass(days: list[Day], number: int) -> None:
    day = days[number]
    assert day.postgres.success, day.postgres.summary()
    assert day.spark.success, day.spark.summary()
    assert {n.name for n in day.spark.models} >= set(INTERFACE_MARTS)
    assert not [n.name for n in day.spark.tests if n.is_bad]


@pytest.mark.parametrize("number", [0, 1], ids=["day1", "day2"])
def test_interface_marts_are_the_same_on_both_engines(days: list[Day], number: int) -> None:
    day = days[number]
    assert set(day.digests) == set(INTERFACE_MARTS)
    assert all(int(pg["*count*"]) > 0 for pg, _ in day.digests.values())
    assert _differences(day) == {}


def test_the_second_day_changed_the_marts(days: list[Day]) -> None:
    """The comparison of day 2 covers history: the simulator's day moved the data."""
    first, second = days
    changed = [m for m in INTERFACE_MARTS if first.digests[m][0] != second.digests[m][0]]
    assert {"dim_users", "fct_listens"} <= set(changed)

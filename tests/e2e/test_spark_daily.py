"""`MOOVITAMIX_ENGINE=spark make daily`, end to end, as cron starts it: the same dlt source
loads the Parquet lake, the same dbt project builds the marts on Spark (local mode), Great
Expectations validates them, the recommender trains from them, and the day is published (views
on Spark, lists in Postgres and the lake). Two days in a row: the second publishes the other
slot and the lake holds two complete snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import REPO, SIMULATOR_ARGS, cron_daily, query, scalar

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]

# What the run's Spark metastore holds, read in a process of its own once the run ended (the
# test process has its own Spark session, with another metastore).
INSPECT = """
import json, sys
from dataclasses import replace
from moovitamix.settings import load_settings
from moovitamix.spark import spark_session
from moovitamix.spark_publication import published_slot
settings = replace(load_settings({}), data_dir=__import__("pathlib").Path(sys.argv[1]))
spark = spark_session(settings)
views = [t.name for t in spark.catalog.listTables("marts") if t.tableType == "VIEW"]
print(json.dumps({
    "slot": published_slot(spark),
    "views": sorted(views),
    "users": spark.table("marts.dim_users").count(),
    "listens": spark.table("marts.fct_listens").count(),
    "lists": spark.table("recommendations.user_top_tracks").count(),
}))
"""


def _daily(
    root: Path, home: Path, warehouse: ConnectionURL, day: int
) -> subprocess.CompletedProcess[str]:
    simulator = " ".join(SIMULATOR_ARGS) + (f" --day {day}" if day else "")
    extra = {
        "MOOVITAMIX_ENGINE": "spark",
        "SPARK_MASTER": "local[2]",
        "MOOVITAMIX_SIMULATOR_ARGS": simulator,
    }
    return cron_daily(root, home, warehouse, extra)


def _inspect(data_dir: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", INSPECT, str(data_dir)],
        capture_output=True, text=True, timeout=300, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _completed_loads(lake: Path) -> int:
    """Loads dlt marked complete in the lake (`_dlt_loads`: JSON lines, status 0)."""
    rows = [
        json.loads(line)
        for path in (lake / "raw" / "_dlt_loads").rglob("*")
        if path.is_file()
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return sum(1 for row in rows if row.get("status") == 0)


def test_two_days_on_spark(
    clean_day0, admin_url: ConnectionURL, tmp_path: Path, project_copy: Path
) -> None:
    """Day 0 is also the parity check: against the reference clean run of day 0 on Postgres
    (same simulator data), the same marts volumes and recommendation quality within 10% on
    the same holdout."""
    warehouse = create_warehouse(admin_url, prefix="mvx_e2e_spark")
    home = tmp_path
    lake = home / "data" / "lake"

    day0 = _daily(project_copy, home, warehouse, 0)
    assert day0.returncode == 0, day0.stdout[-4000:] + day0.stderr[-4000:]
    first_line = next(x for x in day0.stdout.splitlines() if x.startswith("MooVitamix daily run"))
    assert f"engine spark (master local[2], lake {lake.as_uri()})" in first_line
    assert "engine     spark (master local[2]" in day0.stdout
    seen0 = _inspect(home / "data")
    assert seen0["slot"] == "marts_a"
    assert {"dim_users", "dim_tracks", "fct_listens", "track_popularity"} <= set(seen0["views"])
    assert seen0["users"] > 0 and seen0["listens"] > 0
    lists = scalar(warehouse, "select count(*) from recommendations.user_top_tracks")
    assert seen0["lists"] == lists > 0
    # the control plane stays in Postgres; the marts do not go there
    assert query(warehouse, "select status from monitoring.pipeline_runs") == [("success",)]
    assert scalar(warehouse, "select count(*) from pg_tables where schemaname = 'marts'") == 0
    assert _completed_loads(lake) == 1
    on_postgres = clean_day0.warehouse
    assert seen0["users"] == scalar(on_postgres, "select count(*) from marts.dim_users")
    assert seen0["listens"] == scalar(on_postgres, "select count(*) from marts.fct_listens")
    quality = (
        "select (metrics->>'ndcg')::float8 from ml.model_runs where status = 'champion' "
        "order by trained_at desc limit 1"
    )
    spark_ndcg, postgres_ndcg = scalar(warehouse, quality), scalar(on_postgres, quality)
    assert abs(spark_ndcg - postgres_ndcg) <= 0.10 * postgres_ndcg, (spark_ndcg, postgres_ndcg)

    day1 = _daily(project_copy, home, warehouse, 1)
    assert day1.returncode == 0, day1.stdout[-4000:] + day1.stderr[-4000:]
    seen1 = _inspect(home / "data")
    assert seen1["slot"] == "marts_b"
    assert _completed_loads(lake) == 2
    statuses = query(warehouse, "select status from monitoring.pipeline_runs order by started_at")
    assert statuses == [("success",), ("success",)]
    champions = scalar(warehouse, "select count(*) from ml.model_runs where status = 'champion'")
    assert champions >= 1

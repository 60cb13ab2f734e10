"""Forgetting a user on the Spark engine: after a day on Spark, `python -m privacy forget`
rewrites the lake's snapshots and Spark's own tables without the user; a second day, with the
API still serving them, drops them on ingestion; then no Parquet file of the lake or of Spark's
warehouse holds their id or e-mail, and the day's marts were built and published as usual."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from moovitamix.connection_url import ConnectionURL
from privacy.lake import parquet_files
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import SIMULATOR_ARGS, cron_daily, query

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]


def _daily(root: Path, home: Path, warehouse: ConnectionURL, day: int) -> None:
    simulator = " ".join(SIMULATOR_ARGS) + (f" --day {day}" if day else "")
    extra = {"MOOVITAMIX_ENGINE": "spark", "SPARK_MASTER": "local[2]",
             "MOOVITAMIX_SIMULATOR_ARGS": simulator}  # fmt: skip
    result = cron_daily(root, home, warehouse, extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _rows_of(folder: Path, user_id: int, email: str) -> list[str]:
    """Parquet files under `folder` with a row of the user: a user-id column, or any text."""
    hits = []
    for filesystem, path in parquet_files(str(folder)):
        table = pq.read_table(path, filesystem=filesystem, partitioning=None)
        for name in table.column_names:
            values = table[name].to_pylist()
            ids = name == "user_id" or (name == "id" and "users" in path)
            if (ids and user_id in values) or any(
                isinstance(v, str) and email.lower() in v.lower() for v in values
            ):
                hits.append(f"{path}:{name}")
    return hits


def test_a_user_forgotten_on_spark_is_in_no_parquet_file(
    admin_url: ConnectionURL, tmp_path: Path, project_copy: Path
) -> None:
    warehouse = create_warehouse(admin_url, prefix="mvx_forget_spark")
    home = tmp_path / "home"
    home.mkdir()
    _daily(project_copy, home, warehouse, 0)
    lake, spark = home / "data" / "lake", home / "data" / "spark" / "warehouse"
    (user_id,) = query(warehouse, "select min(user_id) from recommendations.user_top_tracks")[0]
    users = pq.read_table(lake / "raw" / "users", partitioning=None).to_pylist()
    (email,) = {u["email"] for u in users if u["id"] == user_id}
    assert _rows_of(lake, user_id, email) and _rows_of(spark, user_id, email)

    env = {
        **os.environ,
        "WAREHOUSE_URL": warehouse.url(),
        "MOOVITAMIX_ENGINE": "spark",
        "MOOVITAMIX_DATA_DIR": str(home / "data"),
        "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
    }
    forget = [sys.executable, "-m", "privacy", "forget", "--user-id", str(user_id)]
    result = subprocess.run(forget, cwd=project_copy, env=env, capture_output=True, text=True,
                            timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (removed,) = query(warehouse, "select removed_by_store from monitoring.erasure_audit")[0]
    assert removed["the lake (Parquet)"] >= 2 and removed["Spark's tables (Parquet)"] >= 1, removed
    assert _rows_of(lake, user_id, email) == [] and _rows_of(spark, user_id, email) == []

    _daily(project_copy, home, warehouse, 1)
    (suppressed,) = query(
        warehouse,
        "select sum(suppressed) from monitoring.ingestion_stats where endpoint = 'users'",
    )[0]
    assert suppressed >= 1
    assert _rows_of(lake, user_id, email) == [] and _rows_of(spark, user_id, email) == []

"""The Spark engine against a cluster's endpoint: a Spark Connect server (started from the
pyspark wheel, on a loopback port, with its own metastore) stands in for the cluster, and
`SPARK_MASTER=sc://...` makes every step of `make daily` its client."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import cron_daily, query, scalar
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]

SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def connect_server(tmp_path: Path) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1 (local[2] inside); its address."""
    home, port = tmp_path / "connect-server", _free_port()
    home.mkdir()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOG_DIR": str(home / "logs"),
        "SPARK_PID_DIR": str(home),
    }
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.sql.catalogImplementation": "hive",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
    }
    args = [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]
    script = SPARK_HOME / "sbin"
    subprocess.run(
        ["bash", str(script / "start-connect-server.sh"), "--master", "local[2]", *args,
         "--driver-java-options", f"-Dderby.system.home={home}"],
        cwd=home, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), "the Spark Connect server", timeout_s=180, poll_s=1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        subprocess.run(
            ["bash", str(script / "stop-connect-server.sh")],
            cwd=home, env=env, check=False, capture_output=True, timeout=120,
        )  # fmt: skip


def test_a_daily_run_over_spark_connect(
    connect_server: str, admin_url: ConnectionURL, tmp_path: Path, project_copy: Path
) -> None:
    warehouse = create_warehouse(admin_url, prefix="mvx_e2e_connect")
    extra = {"MOOVITAMIX_ENGINE": "spark", "SPARK_MASTER": connect_server}
    run = cron_daily(project_copy, tmp_path, warehouse, extra)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert f"engine spark (master {connect_server}" in run.stdout
    assert query(warehouse, "select status from monitoring.pipeline_runs") == [("success",)]
    assert scalar(warehouse, "select count(*) from recommendations.user_top_tracks") > 0
    # the server, not the client, holds the tables: nothing of a local metastore here
    assert not (tmp_path / "data" / "spark" / "metastore_db").exists()
    assert (tmp_path / "connect-server" / "warehouse" / "marts_a.db").is_dir()

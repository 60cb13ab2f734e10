"""Fixtures of the dbt tests: one warehouse taken through two days of the simulator's data by the
real ingestion, built by dbt after each step (dbt_helpers.Scenario), shared by the module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.simulator_process import running_simulator
from tests.conftest import create_warehouse
from tests.dbt_project.dbt_helpers import Scenario, run_scenario

# the simulator of the session fixture (seed 7, 300 users, 200 tracks), but ours: we move its day
SIMULATOR_ARGS = ("--seed", "7", "--users", "300", "--tracks", "200")
DBT_ENV = (
    "WAREHOUSE_URL",
    "MOOVITAMIX_DATA_DIR",
    "MOOVITAMIX_RUN_ID",
    "DBT_TARGET_PATH",
    "DBT_LOG_PATH",
    "MVX_DBT_HOST",
    "MVX_DBT_PORT",
    "MVX_DBT_USER",
    "MVX_DBT_PASSWORD",
    "MVX_DBT_DATABASE",
)


@pytest.fixture(scope="module")
def dbt_env(pg_admin_url: ConnectionURL, tmp_path_factory: pytest.TempPathFactory):
    """A fresh warehouse as WAREHOUSE_URL, private dbt target/log dirs; restored afterwards
    (the runner exports MVX_DBT_* and the run id into this process). Once per server
    (`pg_server`: the embedded Postgres and the distribution's own, tests/conftest.py)."""
    url = create_warehouse(pg_admin_url, f"mvx_dbt_{os.getpid()}")
    tmp = tmp_path_factory.mktemp("dbt")
    with pytest.MonkeyPatch.context() as mp:
        for key in DBT_ENV:
            mp.setenv(key, "")  # recorded, so that teardown restores whatever the code sets
        mp.setenv("WAREHOUSE_URL", url.url())
        mp.setenv("MOOVITAMIX_DATA_DIR", str(tmp / "data"))
        mp.setenv("DBT_TARGET_PATH", str(tmp / "target"))
        mp.setenv("DBT_LOG_PATH", str(tmp / "logs"))
        yield url


@pytest.fixture(scope="module")
def scenario(
    dbt_env: ConnectionURL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    log = tmp_path_factory.mktemp("dbt-simulator") / "simulator.log"
    with running_simulator(list(SIMULATOR_ARGS), log_path=log) as api_url:
        yield run_scenario(dbt_env, api_url, Path(os.environ["DBT_TARGET_PATH"]))

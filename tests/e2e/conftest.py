"""The reference for the end-to-end tests: one clean daily run of day 0, started the way cron
starts it (`env -i`, a minimal PATH, `make -C <repo> daily`), on a warehouse of its own, with a
password in WAREHOUSE_URL that must appear nowhere.

Every e2e test runs once per server (`pg_server`, tests/conftest.py): the embedded Postgres,
whose trust auth ignores the password, and the distribution's own server, which checks it
(scram over TCP)."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import REPO, SIMULATOR_ARGS, TIMEOUT_S, fingerprint

# A password no file or output of the run may contain.
SECRET = "Sup3r-s3cret-pw-7f3a9c"
CRON_USER = "mvx_cron"  # the login of the clean run on a server that checks passwords
_cron_logins = itertools.count(1)


@dataclass(frozen=True)
class CleanRun:
    result: subprocess.CompletedProcess[str]
    warehouse: ConnectionURL
    fingerprint: dict[str, tuple[Any, ...]]
    logs_dir: Path
    home: Path


@pytest.fixture
def fresh_warehouse(pg_admin_url: ConnectionURL) -> ConnectionURL:
    """A new, empty warehouse database on the server of this run of the test."""
    return create_warehouse(pg_admin_url)


def _login_with_secret(url: ConnectionURL, pg_server: str) -> ConnectionURL:
    """`url` with SECRET as its password: on the embedded server (trust) the same user, on a
    server that checks passwords a new superuser login whose password it is."""
    if pg_server == "embedded":
        return url.with_user(url.user, SECRET)
    login = f"{CRON_USER}_{next(_cron_logins)}"
    with psycopg.connect(url.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login superuser password {}").format(
                sql.Identifier(login), sql.Literal(SECRET)
            )
        )
    return url.with_user(login, SECRET)


@pytest.fixture(scope="session")
def clean_day0(
    pg_server: str, pg_admin_url: ConnectionURL, tmp_path_factory: pytest.TempPathFactory
) -> CleanRun:
    """`make daily` under cron's environment: no API URL (the built-in simulator, with the
    tests' small arguments), the warehouse and directories that a crontab line would set."""
    created = create_warehouse(pg_admin_url, prefix="mvx_e2e_clean")
    warehouse = _login_with_secret(created, pg_server)
    home = tmp_path_factory.mktemp("cron-home")
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "WAREHOUSE_URL": warehouse.url(),
        "MOOVITAMIX_DATA_DIR": str(home / "data"),
        "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
        "MOOVITAMIX_SIMULATOR_ARGS": " ".join(SIMULATOR_ARGS),
    }
    result = subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
         "make", "-C", str(REPO), "--no-print-directory", "daily"],
        cwd=home, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return CleanRun(result, warehouse, fingerprint(warehouse), home / "logs", home)

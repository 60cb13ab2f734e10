"""The reference for the end-to-end tests: one clean daily run of day 0, started the way cron
starts it (`env -i`, a minimal PATH, `make -C <root> daily`) in a copy of the project, on a
warehouse of its own, with a password in WAREHOUSE_URL that must appear nowhere.

The tests marked `pg_servers("embedded", "system")` run on both servers (tests/conftest.py):
the embedded Postgres, whose trust auth ignores the password, and the distribution's own
server, where the clean run has a managed service's shape: a login that is no superuser (only
CREATEROLE) and owns an empty database, scram password, TLS only, verify-full in the URL."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import cron_daily, fingerprint
from tests.system_postgres import TLS_ONLY

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
    root: Path  # the copy of the project it ran in


@pytest.fixture
def fresh_warehouse(pg_admin_url: ConnectionURL) -> ConnectionURL:
    """A new, empty warehouse database on the server of this run of the test."""
    return create_warehouse(pg_admin_url)


def _cron_warehouse(
    pg_server: str, pg_admin_url: ConnectionURL, request: pytest.FixtureRequest
) -> tuple[ConnectionURL, dict[str, str]]:
    """The URL a crontab line would set, with SECRET as its password, and extra environment.

    Embedded: a fresh database, the superuser (trust auth ignores the password). The
    distribution's server: a new login with CREATEROLE only and a database it owns, allowed
    over TLS only (TLS_ONLY), its URL verifying the server's certificate, while PGSSLMODE says
    `disable`: a client that lost the URL's TLS options (dlt, dbt, GX, psycopg) is refused."""
    if pg_server == "embedded":
        created = create_warehouse(pg_admin_url, prefix="mvx_e2e_clean")
        return replace(created, password=SECRET), {}
    ca_file = request.getfixturevalue("system_server").ca_file
    login = f"{CRON_USER}_{next(_cron_logins)}"
    with psycopg.connect(pg_admin_url.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create role {} login nosuperuser createrole nocreatedb in role {} password {}"
            ).format(sql.Identifier(login), sql.Identifier(TLS_ONLY), sql.Literal(SECRET))
        )
        conn.execute(
            sql.SQL("create database {} owner {}").format(
                sql.Identifier(login), sql.Identifier(login)
            )
        )
    url = replace(pg_admin_url, user=login, password=SECRET, database=login)
    tls = (("sslmode", "verify-full"), ("sslrootcert", str(ca_file)))
    return replace(url, options=tls), {"PGSSLMODE": "disable"}


@pytest.fixture(scope="session")
def clean_day0(
    pg_server: str,
    pg_admin_url: ConnectionURL,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    project_copy: Path,
) -> CleanRun:
    """`make daily` under cron's environment: no API URL (the built-in simulator, with the
    tests' small arguments), the warehouse and directories that a crontab line would set."""
    warehouse, extra_env = _cron_warehouse(pg_server, pg_admin_url, request)
    home = tmp_path_factory.mktemp("cron-home")
    result = cron_daily(project_copy, home, warehouse, extra_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return CleanRun(result, warehouse, fingerprint(warehouse), home / "logs", home, project_copy)

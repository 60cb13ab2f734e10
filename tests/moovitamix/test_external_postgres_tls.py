"""TLS options in WAREHOUSE_URL (sslmode, sslrootcert, ...) reach every client unchanged, on the
second server, whose self-signed certificate the test server made (tests/system_postgres.py).
The whole daily run over verify-full, with PGSSLMODE=disable around it, is the clean run of
tests/e2e on that server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from dbt_project.runner import dbt_env
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from moovitamix.warehouse import WarehouseUnreachable, open_warehouse
from tests.e2e.daily_helpers import REPO
from tests.moovitamix.test_external_postgres import server_major
from tests.system_postgres import SystemPostgres, self_signed_certificate

pytestmark = pytest.mark.integration

SSL_IN_USE = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"


def _with(url: ConnectionURL, **options: str) -> ConnectionURL:
    return ConnectionURL.parse(url.url().split("?", 1)[0] + "?" + "&".join(
        f"{key}={value}" for key, value in options.items()
    ))  # fmt: skip


@pytest.fixture
def wrong_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the server's certificate."""
    return self_signed_certificate(tmp_path, "other")


def test_the_options_are_kept_for_every_client(system_server: SystemPostgres) -> None:
    url = _with(system_server.admin_url(), sslmode="verify-full", sslrootcert="/ca.crt")
    assert url.url().endswith("?sslmode=verify-full&sslrootcert=/ca.crt")
    assert url.sqlalchemy_url().endswith("?sslmode=verify-full&sslrootcert=/ca.crt")
    assert url.masked.endswith("?sslmode=verify-full&sslrootcert=/ca.crt")
    env = url.libpq_env()
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"]) == ("verify-full", "/ca.crt")
    dbt = dbt_env(url)
    assert (dbt["PGSSLMODE"], dbt["PGSSLROOTCERT"]) == ("verify-full", "/ca.crt")
    role = ConnectionURL.parse(url.url() + "&options=-c%20role%3Dx")
    assert "PGOPTIONS" not in dbt_env(role), "dbt sets its role itself"


def test_sslmode_require_connects_over_tls(
    system_server: SystemPostgres, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = _with(system_server.admin_url().with_database("mvx_tls_require"), sslmode="require")
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path / "data"))
    assert open_warehouse(load_settings()) == url
    with psycopg.connect(url.url()) as conn:
        assert conn.execute(SSL_IN_USE).fetchone() == (True,)
    # GX's door: SQLAlchemy with psycopg2
    engine = sqlalchemy.create_engine(url.sqlalchemy_url())
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text(SSL_IN_USE)).scalar() is True
    finally:
        engine.dispose()


def test_verify_full_with_the_servers_ca_passes_and_with_another_fails_clearly(
    system_server: SystemPostgres, wrong_ca: Path
) -> None:
    base = system_server.admin_url()
    good = _with(base, sslmode="verify-full", sslrootcert=str(system_server.ca_file))
    assert server_major(good) >= 14
    bad = _with(base, sslmode="verify-full", sslrootcert=str(wrong_ca))
    with pytest.raises(WarehouseUnreachable) as raised:
        server_major(bad)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach the warehouse (host 127.0.0.1:{base.port}")
    assert "certificate verify failed" in message
    assert system_server.password not in message


def test_psql_gets_the_tls_options(
    system_server: SystemPostgres, wrong_ca: Path, tmp_path: Path
) -> None:
    """`make psql`: the embedded psql has no TLS, so a URL that requires TLS gets the system's
    psql (the distribution's client comes with its server), with the URL's options."""
    base = system_server.admin_url()
    assert not base.requires_tls

    def psql(ca: Path) -> subprocess.CompletedProcess[str]:
        url = _with(base, sslmode="verify-full", sslrootcert=str(ca))
        assert url.requires_tls
        return subprocess.run(
            [sys.executable, "-m", "moovitamix", "warehouse", "psql", "-X", "-A", "-t", "-c",
             SSL_IN_USE],
            env={**os.environ, "WAREHOUSE_URL": url.url(),
                 "MOOVITAMIX_DATA_DIR": str(tmp_path / "data")},
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    good = psql(system_server.ca_file)
    assert (good.returncode, good.stdout.strip()) == (0, "t"), good.stderr
    bad = psql(wrong_ca)
    assert bad.returncode != 0 and "certificate verify failed" in bad.stderr
    assert system_server.password not in bad.stdout + bad.stderr

"""A warehouse that is not the embedded one: the version check, the line each run starts with,
and a real second server (the distribution's Postgres, scram passwords over loopback TCP)."""

from __future__ import annotations

import logging
from dataclasses import replace

import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from moovitamix.warehouse import (
    UnsupportedServer,
    WarehouseUnreachable,
    check_server,
    connect_server,
    open_warehouse,
)
from tests.system_postgres import SystemPostgres

WHERE = "postgresql://mvx:****@db.example:5432/moovitamix (WAREHOUSE_URL)"


def server_major(url: ConnectionURL) -> int:
    """The server's major version, read through the URL's database or `postgres`."""
    conn, _ = connect_server(url)
    with conn:
        return conn.info.server_version // 10000


@pytest.mark.parametrize(
    ("num", "version"),
    [(140000, "14.0"), (150018, "15.18 (Debian 15.18-0+deb12u1)"), (180001, "18.1")],
)
def test_supported_versions_pass(num: int, version: str) -> None:
    check_server(num, version, WHERE)


@pytest.mark.parametrize(
    ("num", "version", "named"),
    [(130011, "13.11", "PostgreSQL 13.11"), (90624, "9.6.24", "PostgreSQL 9.6.24")],
)
def test_a_server_below_14_is_refused_in_one_line(
    num: int, version: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="moovitamix.warehouse"),
        pytest.raises(UnsupportedServer) as raised,
    ):
        check_server(num, version, WHERE)
    message = str(raised.value)
    assert "\n" not in message
    assert named in message
    assert "Postgres 14 to 18" in message
    assert caplog.messages == [f"warehouse: {named} at {WHERE}"], "named before refused"


@pytest.mark.parametrize("value", [0, -1])
def test_an_unreadable_version_is_refused(value: int) -> None:
    with pytest.raises(UnsupportedServer, match="cannot read the server's version"):
        check_server(value, "", WHERE)


def test_a_newer_major_than_tested_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="moovitamix.warehouse"):
        check_server(190002, "19.2", WHERE)
    assert "PostgreSQL 19.2 is newer than the releases tested" in caplog.text


def test_the_start_line_masks_the_password(caplog: pytest.LogCaptureFixture) -> None:
    url = ConnectionURL("mvx", "s3cret", "db.example", 5432, "moovitamix")
    with caplog.at_level(logging.INFO, logger="moovitamix.warehouse"):
        check_server(150018, "15.18 (Debian)", f"{url.masked} (WAREHOUSE_URL)")
    assert caplog.messages == [
        "warehouse: PostgreSQL 15.18 at postgresql://mvx:****@db.example:5432/moovitamix "
        "(WAREHOUSE_URL)"
    ]


@pytest.mark.integration
def test_the_second_server_checks_passwords(system_server: SystemPostgres) -> None:
    """The fixture is a real password-protected server: a wrong password is refused."""
    url = system_server.admin_url()
    with psycopg.connect(url.url()) as conn:
        assert conn.execute("show password_encryption").fetchone() == ("scram-sha-256",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(replace(url, password="wrong").url(), connect_timeout=5)


@pytest.mark.integration
def test_open_warehouse_names_the_server_and_creates_the_database(
    system_server: SystemPostgres,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = system_server.admin_url().with_database("mvx_open_warehouse")
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path / "data"))
    assert server_major(url) >= 14, "read through `postgres` while the db is missing"
    with caplog.at_level(logging.INFO, logger="moovitamix.warehouse"):
        opened = open_warehouse(load_settings())
    assert opened == url
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warehouse: ")]
    assert len(lines) == 1, caplog.text
    major = server_major(url)
    assert lines[0].startswith(f"warehouse: PostgreSQL {major}.")
    assert lines[0].endswith(f"{url.masked} (WAREHOUSE_URL)")
    assert system_server.password not in caplog.text
    # once per process: a step that opens it again re-checks and re-grants nothing
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert open_warehouse(load_settings()) == url
    assert caplog.records == []


@pytest.mark.integration
def test_an_unreachable_server_is_one_line(system_server: SystemPostgres) -> None:
    url = system_server.admin_url()
    wrong = replace(url, password="wrong")
    with pytest.raises(WarehouseUnreachable) as raised:
        connect_server(wrong)
    message = str(raised.value)
    assert "\n" not in message
    assert "password authentication failed" in message
    assert f"127.0.0.1:{url.port}" in message

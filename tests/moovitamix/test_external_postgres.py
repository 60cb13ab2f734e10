"""A warehouse that is not the embedded one: the version check, the line each run starts with,
and a real second server (the distribution's Postgres, scram passwords over loopback TCP)."""

from __future__ import annotations

import logging

import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from moovitamix.warehouse import (
    UnsupportedServer,
    WarehouseUnreachable,
    check_supported,
    inspect_server,
    open_warehouse,
    server_info,
    start_line,
)
from tests.system_postgres import SystemPostgres


@pytest.mark.parametrize(
    ("num", "version"),
    [("140000", "14.0"), ("150018", "15.18 (Debian 15.18-0+deb12u1)"), ("180001", "18.1")],
)
def test_supported_versions_pass(num: str, version: str) -> None:
    check_supported(server_info(num, version))


@pytest.mark.parametrize(
    ("num", "version", "named"),
    [("130011", "13.11", "PostgreSQL 13.11"), ("90624", "9.6.24", "PostgreSQL 9.6.24")],
)
def test_a_server_below_14_is_refused_in_one_line(num: str, version: str, named: str) -> None:
    with pytest.raises(UnsupportedServer) as raised:
        check_supported(server_info(num, version))
    message = str(raised.value)
    assert "\n" not in message
    assert named in message
    assert "Postgres 14 to 18" in message


@pytest.mark.parametrize("value", ["", "abc", None, "0", "-1"])
def test_an_unreadable_version_is_refused(value: object) -> None:
    with pytest.raises(UnsupportedServer, match="cannot read the server's version"):
        server_info(value, "")


def test_a_newer_major_than_tested_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="moovitamix.warehouse"):
        check_supported(server_info("190002", "19.2"))
    assert "PostgreSQL 19.2 is newer than the releases tested" in caplog.text


def test_the_start_line_masks_the_password() -> None:
    url = ConnectionURL("mvx", "s3cret", "db.example", 5432, "moovitamix")
    line = start_line(server_info("150018", "15.18 (Debian)"), url.masked, "WAREHOUSE_URL")
    assert line == (
        "warehouse: PostgreSQL 15.18 at postgresql://mvx:****@db.example:5432/moovitamix "
        "(WAREHOUSE_URL)"
    )


@pytest.mark.integration
def test_the_second_server_checks_passwords(system_server: SystemPostgres) -> None:
    """The fixture is a real password-protected server: a wrong password is refused."""
    url = system_server.admin_url()
    with psycopg.connect(url.url()) as conn:
        assert conn.execute("show password_encryption").fetchone() == ("scram-sha-256",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.with_user(url.user, "wrong").url(), connect_timeout=5)


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
    assert inspect_server(url).major >= 14, "read through `postgres` while the db is missing"
    with caplog.at_level(logging.INFO, logger="moovitamix.warehouse"):
        opened = open_warehouse(load_settings())
    assert opened == url
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warehouse: ")]
    assert len(lines) == 1, caplog.text
    major = inspect_server(url).major
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
    wrong = url.with_user(url.user, "wrong")
    with pytest.raises(WarehouseUnreachable) as raised:
        inspect_server(wrong)
    message = str(raised.value)
    assert "\n" not in message
    assert "password authentication failed" in message
    assert f"127.0.0.1:{url.port}" in message

"""Managed-service rules on a real second server (the distribution's Postgres, scram over TCP):
the warehouse user is no superuser. A login with neither CREATEROLE nor CREATEDB stops before
writing anything, naming the privilege and the SQL an administrator runs once, and runs once
that SQL ran. (A CREATEROLE-only login that owns its database runs the whole day over TLS:
the clean run of tests/e2e on that server.)"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.privileges import Missing, missing_privileges
from moovitamix.roles import ROLES
from moovitamix.settings import load_settings
from moovitamix.warehouse import WarehouseUnreachable, connect_server, open_warehouse
from tests.e2e.daily_helpers import REPO, audit_grants, scalar

pytestmark = pytest.mark.integration

PASSWORD = "Managed-pw-5d1e"
_logins = itertools.count(1)


def _login(admin: ConnectionURL, attributes: str, *, own_database: bool = True) -> ConnectionURL:
    """A new LOGIN role (password auth) and, if asked, a database it owns (what a managed
    service's console makes): its URL."""
    name = f"mvx_managed_{next(_logins)}"
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(f"create role {{}} login {attributes} password {{}}").format(
                sql.Identifier(name), sql.Literal(PASSWORD)
            )
        )
        if own_database:
            conn.execute(
                sql.SQL("create database {} owner {}").format(
                    sql.Identifier(name), sql.Identifier(name)
                )
            )
    return replace(admin, user=name, password=PASSWORD, database=name)


def _schemas(url: ConnectionURL) -> list[str]:
    with psycopg.connect(url.url()) as conn:
        rows = conn.execute(
            "select nspname from pg_namespace where nspname not like 'pg\\_%' order by 1"
        ).fetchall()
    return [str(row[0]) for row in rows]


def _memberships(admin: ConnectionURL, user: str) -> int:
    with psycopg.connect(admin.url()) as conn:
        row = conn.execute(
            "select count(*) from pg_auth_members m join pg_roles u on u.oid = m.member "
            "where u.rolname = %s",
            (user,),
        ).fetchone()
    return int(row[0]) if row else 0


def _open(url: ConnectionURL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ConnectionURL:
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path / "data"))
    return open_warehouse(load_settings())


def _missing(url: ConnectionURL) -> list[Missing]:
    conn, exists = connect_server(url)
    with conn:
        return missing_privileges(conn, url.database, database_exists=exists)


def _print_admin_sql(url: ConnectionURL) -> str:
    """`make print-admin-sql`, as an administrator would call it for this warehouse."""
    result = subprocess.run(
        [sys.executable, "-m", "moovitamix", "warehouse", "admin-sql"],
        cwd=REPO, env={**os.environ, "WAREHOUSE_URL": url.url()},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_login_without_createrole_stops_before_writing_then_runs_after_the_admin_sql(
    system_admin_url: ConnectionURL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = _login(system_admin_url, "nosuperuser nocreaterole nocreatedb")
    schemas_before = _schemas(url)
    with pytest.raises(WarehouseUnreachable) as raised:
        _open(url, monkeypatch, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"warehouse user {url.user} lacks CREATEROLE (")
    assert f'TO "{url.user}" WITH ADMIN OPTION;' in message
    assert "make print-admin-sql" in message
    assert PASSWORD not in message
    # nothing was written: no schema, no membership
    assert _schemas(url) == schemas_before
    assert _memberships(system_admin_url, url.user) == 0

    script = _print_admin_sql(url)
    assert "-- CREATEROLE:" in script and PASSWORD not in script
    with psycopg.connect(system_admin_url.url(), autocommit=True) as admin:
        admin.execute(script.encode())
    assert _missing(url) == []
    assert _open(url, monkeypatch, tmp_path) == url
    assert set(_schemas(url)) >= {"raw", "marts", "monitoring", "recommendations"}
    with psycopg.connect(url.url()) as conn:
        assert audit_grants(conn) == []
    assert _memberships(system_admin_url, url.user) == len(ROLES)


def test_a_missing_database_without_createdb_names_the_create_database(
    system_admin_url: ConnectionURL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = _login(system_admin_url, "nosuperuser createrole nocreatedb", own_database=False)
    with pytest.raises(WarehouseUnreachable) as raised:
        _open(url, monkeypatch, tmp_path)
    assert str(raised.value).startswith(f"warehouse user {url.user} lacks CREATEDB (")
    assert f'CREATE DATABASE "{url.database}" OWNER "{url.user}";' in str(raised.value)
    databases = scalar(
        system_admin_url, "select count(*) from pg_database where datname = %s", (url.database,)
    )
    assert databases == 0


def test_schemas_owned_by_another_role_are_named(system_admin_url: ConnectionURL) -> None:
    url = _login(system_admin_url, "nosuperuser createrole nocreatedb")
    with psycopg.connect(system_admin_url.with_database(url.database).url()) as conn:
        conn.execute("create schema raw")  # by the administrator: not the user's
    (missing,) = _missing(url)
    assert missing.privilege == "ownership of schemas raw"
    assert missing.statements == (f'ALTER SCHEMA "raw" OWNER TO "{url.user}";',)


def test_admin_sql_of_an_unreachable_warehouse_is_one_line_and_exit_3() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moovitamix", "warehouse", "admin-sql"],
        cwd=REPO, env={**os.environ, "WAREHOUSE_URL": "postgresql://u:pw@127.0.0.1:1/wh"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "127.0.0.1" in result.stderr and "pw" not in result.stderr

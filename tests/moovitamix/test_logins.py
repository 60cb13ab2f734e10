"""Least privilege that holds (SECURITY.md, "Logins"): every step, the app and each person logs
in as a LOGIN role of its own, and tries to break out of it the ways a session can: RESET ROLE,
SET ROLE NONE, SET ROLE postgres (or another step's role), SET SESSION AUTHORIZATION, a
function made in a schema it may write, reading raw, the PII mart and another step's tables,
writing the marts. Each is refused, on the embedded server (trust on its private socket) and on
the distribution's older server (scram passwords over TCP, tests/system_postgres.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from moovitamix import logins, roles
from moovitamix.__main__ import main as moovitamix_main
from moovitamix.connection_url import ConnectionURL
from moovitamix.credentials import CredentialsError, CredentialsFile
from moovitamix.logins import PROJECT_LOGINS, Logins
from moovitamix.roles import (
    ANALYST,
    APP,
    LOADER,
    ML,
    PII_READER,
    PRIVACY,
    PUBLISHER,
    TRANSFORMER,
)
from moovitamix.run_lock import run_lock
from moovitamix.settings import load_settings
from tests.conftest import create_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.pg_servers("embedded", "system")]

REPO = Path(__file__).resolve().parents[2]
Denied = psycopg.errors.InsufficientPrivilege
PERSON = "test_alice"  # a person's login (their names may not start with mvx_)

# What each login may read: every other table below is refused to it.
# mvx_privacy erases a user wherever their rows are: it reads (to delete by a condition) the
# tables that hold users (the marts by dbt's grants, on a build), never the models' registry
TABLES = {
    "raw.users": {LOADER, TRANSFORMER, PRIVACY},
    "staging.stg_users": {TRANSFORMER, PRIVACY},
    "marts.dim_users_pii": {TRANSFORMER},  # dbt builds it; else the PII reader only
    "marts.dim_users": {ANALYST, ML, TRANSFORMER, PUBLISHER},
    "ml.model_runs": {ML, PUBLISHER},  # the publisher swaps mvx_ml's lists: a member of it
    "recommendations.user_top_tracks": {ML, APP, TRANSFORMER, PUBLISHER, PRIVACY},
}


def _file() -> CredentialsFile:
    """The session's secrets file (tests/hermetic.py points MOOVITAMIX_CREDENTIALS_FILE at it):
    the logins are the server's, shared by every test of the session."""
    return logins.credentials_file(load_settings())


@pytest.fixture
def warehouse(pg_admin_url: ConnectionURL) -> Iterator[tuple[ConnectionURL, Logins]]:
    """A warehouse with the roles, the project logins, a person's analyst login and a table
    per kind of data, each made by the role that writes it."""
    url = create_warehouse(pg_admin_url)
    roles.ensure_roles(url)
    project = logins.ensure_project_logins(url, _file())
    with psycopg.connect(url.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(PERSON)))
    logins.add_person_login(url, PERSON, ANALYST, "alice-secret-1")
    with psycopg.connect(url.url(), autocommit=True) as conn:
        for role, statement in (
            (LOADER, "create table raw.users (user_id bigint, email text)"),
            (TRANSFORMER, "create view staging.stg_users as select * from raw.users"),
            (TRANSFORMER, "create table marts.dim_users_pii (user_id bigint, email text)"),
            (TRANSFORMER, "grant select on marts.dim_users_pii to mvx_pii_reader"),
            (TRANSFORMER, "create table marts.dim_users (user_id bigint)"),
            (TRANSFORMER, "grant select on marts.dim_users to mvx_analyst, mvx_ml"),
            (ML, "create table ml.model_runs (model_run_id text)"),
            (ML, "create table recommendations.user_top_tracks (user_id bigint)"),
        ):
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            conn.execute(statement.encode())
            conn.execute("reset role")
    yield url, project
    with psycopg.connect(url.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(PERSON)))


def _person_url(url: ConnectionURL) -> ConnectionURL:
    return replace(url, user=PERSON, password="alice-secret-1")


def _denied(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(Denied), conn.transaction():
        conn.execute(statement.encode())


@pytest.mark.parametrize("role", [*PROJECT_LOGINS, "person"])
def test_no_login_breaks_out_of_its_role(
    warehouse: tuple[ConnectionURL, Logins], role: str
) -> None:
    url, project = warehouse
    login_url = _person_url(url) if role == "person" else project.url(role)
    login = login_url.user
    acts_as = ANALYST if role == "person" else role
    with psycopg.connect(login_url.url(), autocommit=True) as conn:
        # RESET ROLE returns to the role the connection started as (libpq's `-c role=`),
        # SET ROLE NONE to the login: either holds its group's privileges, no more
        for leave, now in (("reset role", login_url.user if role == "person" else acts_as),
                           ("set role none", login)):  # fmt: skip
            conn.execute(leave)
            who = conn.execute("select current_user, session_user").fetchone()
            assert who == (now, login), leave
        attributes = conn.execute(
            "select rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication "
            "from pg_roles where rolname = current_user"
        ).fetchone()
        assert attributes == (False,) * 5
        held = {acts_as, ML} if acts_as == PUBLISHER else {acts_as}  # it swaps mvx_ml's lists
        for other in ("postgres", url.user, *(r for r in roles.ROLES if r not in held)):
            _denied(conn, f'set role "{other}"')
        _denied(conn, "set session authorization postgres")
        _denied(conn, f'set session authorization "{url.user}"')
        for table, readers in TABLES.items():
            if acts_as in readers:
                conn.execute(f"select count(*) from {table}".encode())
            else:
                _denied(conn, f"select count(*) from {table}")


@pytest.mark.parametrize("role", [LOADER, TRANSFORMER, ML, PUBLISHER])
def test_a_function_made_in_a_writable_schema_gets_no_more_than_its_maker(
    warehouse: tuple[ConnectionURL, Logins], role: str
) -> None:
    """A SECURITY DEFINER function runs as its owner: the role itself, so it reads nothing
    the role may not, and cannot take another role."""
    _, project = warehouse
    schema = {LOADER: "raw", TRANSFORMER: "staging", ML: "ml", PUBLISHER: "monitoring"}[role]
    target = {TRANSFORMER: "ml.model_runs", ML: "raw.users"}.get(role, "marts.dim_users_pii")
    with psycopg.connect(project.url(role).url(), autocommit=True) as conn:
        conn.execute("set check_function_bodies = off")  # its body names what it may not read
        conn.execute(
            f"create function {schema}.peek() returns bigint language sql security definer "
            f"as 'select count(*) from {target}'".encode()
        )
        conn.execute(
            f"create function {schema}.become() returns text language plpgsql security definer "
            "as 'begin set role postgres; return current_user; end'".encode()
        )
        conn.execute("reset role")
        _denied(conn, f"select {schema}.peek()")
        _denied(conn, f"select {schema}.become()")


def test_the_analyst_writes_and_creates_nothing(warehouse: tuple[ConnectionURL, Logins]) -> None:
    url, project = warehouse
    for login_url in (project.url(ANALYST), _person_url(url)):
        with psycopg.connect(login_url.url(), autocommit=True) as conn:
            conn.execute("set role none")
            for statement in (
                "insert into marts.dim_users values (1)",
                "update marts.dim_users set user_id = 2",
                "delete from marts.dim_users",
                "truncate marts.dim_users",
                "create table marts.mine (x int)",
                "create function marts.f() returns int language sql as 'select 1'",
                "create function public.f() returns int language sql as 'select 1'",
                "create schema mine",
                "drop table marts.dim_users",
            ):
                _denied(conn, statement)


def test_project_logins_are_members_of_their_group_only(
    warehouse: tuple[ConnectionURL, Logins],
) -> None:
    url, _ = warehouse
    with psycopg.connect(url.url(), autocommit=True) as conn:
        members = dict(
            conn.execute(
                "select r.rolname, array_agg(g.rolname order by g.rolname) from pg_roles r "
                "join pg_auth_members m on m.member = r.oid join pg_roles g on g.oid = m.roleid "
                "where r.rolname = any(%s) group by r.rolname",
                (list(PROJECT_LOGINS.values()),),
            ).fetchall()
        )
    assert members == {login: [role] for role, login in PROJECT_LOGINS.items()}


def test_the_secrets_file_is_private_and_a_readable_one_is_refused(
    warehouse: tuple[ConnectionURL, Logins], tmp_path: Path
) -> None:
    url, project = warehouse
    path = _file().path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob("*.tmp")), "written atomically: no temp file left"
    assert all(project.passwords.values())
    copy = tmp_path / "copy.pgpass"
    copy.write_bytes(path.read_bytes())
    copy.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others"):
        CredentialsFile(copy).password(url, PROJECT_LOGINS[LOADER])


def test_rotation_keeps_open_sessions_and_the_old_password_stops_working(
    warehouse: tuple[ConnectionURL, Logins], pg_server: str
) -> None:
    url, before = warehouse
    with psycopg.connect(before.url(LOADER).url(), autocommit=True) as running:
        rotated = logins.rotate_project_logins(url, _file())
        assert sorted(rotated) == sorted(PROJECT_LOGINS.values())
        assert running.execute("select current_user").fetchone() == (LOADER,), "a run goes on"
    after = logins.stored_logins(url, _file())
    assert after is not None and after.passwords != before.passwords
    with psycopg.connect(after.url(LOADER).url()) as conn:
        assert conn.execute("select current_user").fetchone() == (LOADER,)
    if pg_server == "system":  # the embedded server trusts its private socket
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(before.url(LOADER).url())


def test_rotation_waits_for_a_running_daily_run(
    warehouse: tuple[ConnectionURL, Logins],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, before = warehouse
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path))
    with run_lock(tmp_path / "daily.lock", "the-running-one"):
        code = moovitamix_main(["login", "rotate", "--wait", "0"])
    err = capsys.readouterr().err
    assert code != 0 and "another run is in progress" in err and "Traceback" not in err
    assert logins.stored_logins(url, _file()) == before, "nothing rotated under a run"
    assert moovitamix_main(["login", "rotate", "--wait", "0"]) == 0
    printed = capsys.readouterr().out
    after = logins.stored_logins(url, _file())
    assert after is not None and after.passwords != before.passwords
    assert not any(pw in printed for pw in [*after.passwords.values(), *before.passwords.values()])


def test_people_logins_are_added_listed_and_removed(
    warehouse: tuple[ConnectionURL, Logins],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, _ = warehouse
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path))
    name = "test_bob"
    try:
        assert moovitamix_main(["login", "add", "--name", name, "--role", PII_READER]) == 0
        out = capsys.readouterr().out
        password = out.split("shown once: ", 1)[1].strip()
        assert len(password) >= 32 and password not in caplog.text
        with psycopg.connect(replace(url, user=name, password=password).url()) as conn:
            conn.execute("set role none")
            assert conn.execute("select count(*) from marts.dim_users_pii").fetchone() == (0,)
            _denied(conn, "select count(*) from raw.users")
        assert moovitamix_main(["login", "list"]) == 0
        listed = capsys.readouterr().out
        assert f"{name}" in listed and PII_READER in listed
        assert PROJECT_LOGINS[LOADER] in listed and password not in listed
        # neither a project login nor an existing role is a person's to remove or reuse
        assert moovitamix_main(["login", "remove", "--name", PROJECT_LOGINS[LOADER]]) == 2
        assert moovitamix_main(["login", "add", "--name", name, "--role", ANALYST]) == 2
        assert moovitamix_main(["login", "add", "--name", "mvx_x", "--role", ANALYST]) == 2
        assert "error: " in capsys.readouterr().err
        assert moovitamix_main(["login", "remove", "--name", name]) == 0
        with psycopg.connect(url.url()) as conn:
            gone = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
        assert gone is None
    finally:
        with psycopg.connect(url.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def test_analyst_psql_stays_the_analyst_after_set_role_none(
    warehouse: tuple[ConnectionURL, Logins], tmp_path: Path
) -> None:
    """`make analyst-psql` (`warehouse --role mvx_analyst psql`): the project's analyst login,
    its password in psql's environment only."""
    url, project = warehouse
    env = {
        **os.environ,
        "WAREHOUSE_URL": url.url(),
        "MOOVITAMIX_DATA_DIR": str(tmp_path / "data"),
        "MOOVITAMIX_LOGS_DIR": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "moovitamix", "warehouse", "--role", ANALYST, "psql", "-At",
         "-c", "set role none", "-c", "select current_user, session_user",
         "-c", "set role postgres", "-c", "select count(*) from marts.dim_users_pii"],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    login = PROJECT_LOGINS[ANALYST]
    assert done.stdout.strip().splitlines() == ["SET", f"{login}|{login}"]
    assert "permission denied to set role" in done.stderr
    assert "permission denied for table dim_users_pii" in done.stderr
    assert project.passwords[login] not in done.stdout + done.stderr


def test_a_password_from_the_environment_is_used_not_written_nor_rotated(
    warehouse: tuple[ConnectionURL, Logins], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MOOVITAMIX_<LOGIN>_PASSWORD: a login a DBA made, its password kept in the environment."""
    url, _ = warehouse
    login, password = PROJECT_LOGINS[APP], "app-from-the-environment-1"
    monkeypatch.setenv(f"MOOVITAMIX_{login.upper()}_PASSWORD", password)
    given = load_settings().login_passwords
    assert given == {login: password}
    project = logins.ensure_project_logins(url, _file(), given)
    assert project.passwords[login] == password
    assert password not in _file().path.read_text()
    assert login not in logins.rotate_project_logins(url, _file(), given)
    with psycopg.connect(project.url(APP).url()) as conn:
        assert conn.execute("select session_user::text").fetchone() == (login,)

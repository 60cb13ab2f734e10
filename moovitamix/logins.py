"""LOGIN roles: each pipeline step, the serving API and the publish connect as a login of their
own (`mvx_loader_login`, ...), a member of its group role only, and people get logins of their
own (`add_person_login`). `SET ROLE NONE` or `RESET ROLE` then returns a session to its login,
which may do no more than its group: the roles are held, not worn.

The bootstrap URL (WAREHOUSE_URL) only creates and maintains roles, databases and schemas. The
logins' passwords live in the secrets file (moovitamix.credentials); they reach the server as
SCRAM verifiers computed here (libpq's PQencryptPasswordConn), so no statement the server could
log holds a password."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.credentials import CredentialsError, CredentialsFile, default_path
from moovitamix.errors import one_line
from moovitamix.roles import (
    ANALYST,
    APP,
    LOADER,
    ML,
    PII_READER,
    PRIVACY,
    PUBLISHER,
    TRANSFORMER,
    as_role,
)
from moovitamix.settings import Settings
from moovitamix.warehouse import (
    WarehouseUnreachable,
    connect,
    open_warehouse,
    resolve_url,
    setup_url,
)

log = logging.getLogger(__name__)

# The project's own logins, one per group role that runs something.
PROJECT_LOGINS = {
    role: f"{role}_login" for role in (LOADER, TRANSFORMER, ML, ANALYST, APP, PUBLISHER, PRIVACY)
}
PERSON_ROLES = (ANALYST, PII_READER)  # what a person's login may be a member of
PERSON_COMMENT = "MooVitamix person login"
PROJECT_COMMENT = "MooVitamix project login of "
_ATTRIBUTES = "login inherit nosuperuser nocreatedb nocreaterole noreplication nobypassrls"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SET_UP: dict[ConnectionURL, Logins] = {}  # per process, as warehouse._OPENED


class LoginError(RuntimeError):
    """A login could not be created, changed or used; the message is one line for the user."""


def credentials_file(settings: Settings) -> CredentialsFile:
    return CredentialsFile(settings.credentials_file or default_path())


@dataclass(frozen=True)
class Logins:
    """The project logins of one warehouse and their passwords: `url(role)` connects as the
    role's own login, its sessions acting as the group role (what they create, it owns)."""

    server: ConnectionURL  # the bootstrap URL: host, port, database and connection options
    passwords: Mapping[str, str]

    def url(self, role: str, **settings: str) -> ConnectionURL:
        if role not in PROJECT_LOGINS:
            raise LoginError(f"no project login for {role}; one of {', '.join(PROJECT_LOGINS)}")
        login = PROJECT_LOGINS[role]
        base = replace(self.server, user=login, password=self.passwords.get(login, ""))
        return as_role(base, role, **settings)


def scram_verifier(conn: psycopg.Connection, login: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of `password`, computed by libpq on this side: the statement
    that sets it holds no password (server logs, pg_stat_statements)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256")
    return verifier.decode()


def _set_password(conn: psycopg.Connection, login: str, password: str) -> None:
    conn.execute(
        sql.SQL("alter role {} password {}").format(
            sql.Identifier(login), sql.Literal(scram_verifier(conn, login, password))
        )
    )


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _ensure_login(conn: psycopg.Connection, role: str, login: str) -> bool:
    """Create `login` (a member of `role` only) or restore its attributes; True if created."""
    row = conn.execute(
        "select rolcanlogin and rolinherit and not (rolsuper or rolcreatedb or rolcreaterole "
        "or rolreplication or rolbypassrls) from pg_roles where rolname = %s",
        (login,),
    ).fetchone()
    ident = sql.Identifier(login)
    if row is None:
        conn.execute(sql.SQL(f"create role {{}} {_ATTRIBUTES}").format(ident))
        conn.execute(
            sql.SQL("comment on role {} is {}").format(
                ident, sql.Literal(f"{PROJECT_COMMENT}{role}")
            )
        )
        log.info("logins: created %s", login)
    elif not row[0]:
        conn.execute(sql.SQL(f"alter role {{}} {_ATTRIBUTES}").format(ident))
        log.warning("logins: %s had more than a login's attributes; reset", login)
    member = conn.execute("select pg_has_role(%s, %s, 'member')", (login, role)).fetchone()
    if member != (True,):
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), ident))
    others = conn.execute(
        "select m.roleid::regrole::text from pg_auth_members m "
        "where m.member = %s::regrole and m.roleid <> %s::regrole",
        (login, role),
    ).fetchall()
    for (other,) in others:  # a step's login is a member of its group only
        conn.execute(sql.SQL("revoke {} from {}").format(sql.Identifier(other), ident))
        log.warning("logins: revoked %s from %s", other, login)
    return row is None


def ensure_project_logins(
    admin: ConnectionURL, file: CredentialsFile, given: Mapping[str, str] | None = None
) -> Logins:
    """Create the project logins that are missing and give each its password: `given` (the
    environment's), else the secrets file's, else a new one (written there); return them. The
    server is set to these passwords each time: they are the truth, also after another file's
    set-up."""
    given = given or {}
    with file.locked():
        passwords: dict[str, str] = {}
        new: dict[str, str] = {}
        with connect(setup_url(admin), autocommit=True) as conn:
            for role, login in PROJECT_LOGINS.items():
                _ensure_login(conn, role, login)
                stored = given.get(login) or file.password(admin, login)
                if stored is None:
                    stored = new[login] = new_password()
                _set_password(conn, login, stored)
                passwords[login] = stored
        if new:
            file.store(admin, new)
            log.info("logins: new password(s) of %s in %s", ", ".join(new), file.path)
    return Logins(admin, passwords)


def rotate_project_logins(
    admin: ConnectionURL, file: CredentialsFile, given: Mapping[str, str] | None = None
) -> list[str]:
    """A new password for every project login whose password is not `given` (the
    environment's: rotate those where they are set), in the server and the secrets file.
    Sessions open already keep working (Postgres checks a password at connection only)."""
    with file.locked(), connect(setup_url(admin), autocommit=True) as conn:
        new = {
            login: new_password() for login in PROJECT_LOGINS.values() if login not in (given or {})
        }
        for role, login in PROJECT_LOGINS.items():
            _ensure_login(conn, role, login)
        with conn.transaction():
            for login, password in new.items():
                _set_password(conn, login, password)
        file.store(admin, new)
    _SET_UP.clear()
    return list(new)


def stored_logins(
    server: ConnectionURL, file: CredentialsFile, given: Mapping[str, str] | None = None
) -> Logins | None:
    """The project logins as `given` (the environment) or else the secrets file has them (None
    if one is missing)."""
    passwords = {
        login: (given or {}).get(login) or file.password(server, login)
        for login in PROJECT_LOGINS.values()
    }
    if any(password is None for password in passwords.values()):
        return None
    return Logins(server, {login: pw or "" for login, pw in passwords.items()})


def _answers(logins: Logins) -> bool:
    try:
        with connect(logins.url(PUBLISHER)) as conn:
            conn.execute("select 1")
    except (WarehouseUnreachable, psycopg.Error):
        return False
    return True


def open_logins(settings: Settings) -> Logins:
    """The warehouse opened (as `open_warehouse`) and its project logins set up, once per
    process. When the bootstrap user cannot log in (its password removed after set-up) or may
    not create roles (a DBA made the logins), the logins of the secrets file are used."""
    file = credentials_file(settings)
    try:
        admin = open_warehouse(settings)
        if admin not in _SET_UP:
            _SET_UP[admin] = ensure_project_logins(admin, file, settings.login_passwords)
        return _SET_UP[admin]
    except (WarehouseUnreachable, psycopg.errors.InsufficientPrivilege) as exc:
        reason = one_line(exc)
        server = resolve_url(settings)
        logins = stored_logins(server, file, settings.login_passwords)
        if logins is None or not _answers(logins):
            if isinstance(exc, WarehouseUnreachable):
                raise
            raise WarehouseUnreachable(
                f"cannot create the project logins as {server.user} ({reason}): a DBA creates "
                "them (SECURITY.md) and their passwords go in the credentials file "
                f"{file.path}"
            ) from None
    except CredentialsError as exc:
        raise WarehouseUnreachable(str(exc)) from None
    log.warning("set-up skipped (%s): using the project logins set up before", reason)
    return logins


# -- people's logins --------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name.startswith(("mvx_", "pg_")):
        raise LoginError(
            f"login name {name!r}: lower-case letters, digits and _, not starting with mvx_ or pg_"
        )


def add_person_login(admin: ConnectionURL, name: str, role: str, password: str | None) -> None:
    """A LOGIN role `name`, member of `role` (mvx_analyst or mvx_pii_reader) only; `password`
    None: none (certificate authentication, which the server's pg_hba.conf must map)."""
    _check_name(name)
    if role not in PERSON_ROLES:
        raise LoginError(f"a person's role is one of {', '.join(PERSON_ROLES)}, not {role!r}")
    ident = sql.Identifier(name)
    with connect(admin, autocommit=True) as conn, conn.transaction():
        if conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
            raise LoginError(f"a role named {name} exists already")
        conn.execute(sql.SQL(f"create role {{}} {_ATTRIBUTES}").format(ident))
        conn.execute(sql.SQL("comment on role {} is {}").format(ident, sql.Literal(PERSON_COMMENT)))
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), ident))
        if password is not None:
            _set_password(conn, name, password)
    log.info("logins: created %s (%s)", name, role)


def remove_person_login(admin: ConnectionURL, name: str) -> None:
    """Drop a person's login (never a project login or a role the project did not make)."""
    with connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "select shobj_description(oid, 'pg_authid') from pg_roles where rolname = %s", (name,)
        ).fetchone()
        if row is None:
            raise LoginError(f"no login named {name}")
        if row[0] != PERSON_COMMENT:
            raise LoginError(f"{name} is not a person's login made by add-login; not removed")
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
    log.info("logins: removed %s", name)


@dataclass(frozen=True)
class LoginRow:
    name: str
    roles: tuple[str, ...]
    kind: str  # "project", "person" or "other" (made by a DBA)
    password: bool


def list_logins(admin: ConnectionURL) -> list[LoginRow]:
    """Every LOGIN role that is a member of a project role, and which roles it has. The
    password column needs a superuser (pg_authid); otherwise it reads false."""
    with connect(admin, autocommit=True) as conn:
        superuser = conn.execute("select rolsuper from pg_roles where rolname = current_user")
        can_see = superuser.fetchone() == (True,)
        password = "a.rolpassword is not null" if can_see else "false"
        rows = conn.execute(
            f"select r.rolname, array_agg(g.rolname order by g.rolname), "
            f"coalesce(shobj_description(r.oid, 'pg_authid'), ''), bool_or({password}) "
            "from pg_roles r join pg_auth_members m on m.member = r.oid "
            "join pg_roles g on g.oid = m.roleid "
            + ("join pg_authid a on a.oid = r.oid " if can_see else "")
            + "where r.rolcanlogin and g.rolname like 'mvx\\_%%' and not r.rolsuper "
            "group by r.rolname, r.oid order by r.rolname"
        ).fetchall()
    kinds = {PERSON_COMMENT: "person"}
    return [
        LoginRow(
            name,
            tuple(groups),
            "project" if comment.startswith(PROJECT_COMMENT) else kinds.get(comment, "other"),
            bool(has_password),
        )
        for name, groups, comment, has_password in rows
    ]

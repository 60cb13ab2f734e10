"""What the warehouse user may not do yet (CREATEDB, CREATE on the database, owning the schemas,
the six roles WITH ADMIN OPTION), found by read-only queries before anything is written, with
the SQL an administrator runs once (README "Privileges", `make print-admin-sql`)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ROLES, SCHEMAS


@dataclass(frozen=True)
class Missing:
    privilege: str  # what the user lacks, e.g. "CREATEROLE"
    why: str  # what the run cannot do without it
    statements: tuple[str, ...]  # what an administrator runs once


def _quote(conn: psycopg.Connection, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _roles_missing(
    conn: psycopg.Connection, user: str, *, can_create: bool = False
) -> Missing | None:
    """The pipeline's roles the user may not grant: without CREATEROLE, every role it has no
    ADMIN OPTION on; with it (`can_create`, Postgres 16+), the existing ones, since a
    CREATEROLE user there grants only roles it has ADMIN on (it gets that on those it makes)."""
    rows = conn.execute(
        """select r.rolname, coalesce(bool_or(m.admin_option), false)
           from pg_roles r
           left join pg_auth_members m
             on m.roleid = r.oid and m.member = (select oid from pg_roles where rolname = %s)
           where r.rolname = any(%s)
           group by r.rolname""",
        (user, list(ROLES)),
    ).fetchall()
    admin_of = {str(name) for name, admin in rows if admin}
    existing = {str(name) for name, _ in rows}
    absent = [role for role in ROLES if role not in existing]
    ungranted = [role for role in ROLES if role not in admin_of]
    if can_create:
        ungranted = [role for role in ungranted if role in existing]
    if not ungranted:
        return None
    statements = [f"CREATE ROLE {_quote(conn, role)} NOLOGIN;" for role in absent]
    roles = ", ".join(_quote(conn, role) for role in ungranted)
    statements.append(f"GRANT {roles} TO {_quote(conn, user)} WITH ADMIN OPTION;")
    return Missing(
        "CREATEROLE",
        f"the pipeline's roles {', '.join(ungranted)} are not granted to it WITH ADMIN OPTION",
        tuple(statements),
    )


def _schemas_missing(
    conn: psycopg.Connection, database: str, user: str, *, can_create: bool
) -> list[Missing]:
    schemas = list(SCHEMAS)
    rows = conn.execute(
        """select n.nspname, pg_get_userbyid(n.nspowner), pg_has_role(%s, n.nspowner, 'USAGE')
           from pg_namespace n where n.nspname = any(%s)""",
        (user, schemas),
    ).fetchall()
    present = {str(name) for name, _, _ in rows}
    missing: list[Missing] = []
    absent = [schema for schema in schemas if schema not in present]
    if absent and not can_create:
        missing.append(
            Missing(
                f"CREATE on database {database}",
                f"it cannot create the schemas {', '.join(absent)}",
                (f"GRANT CREATE ON DATABASE {_quote(conn, database)} TO {_quote(conn, user)};",),
            )
        )
    foreign = [(str(name), str(owner)) for name, owner, ours in rows if not ours]
    if foreign:
        missing.append(
            Missing(
                "ownership of schemas " + ", ".join(name for name, _ in foreign),
                "it cannot grant the roles their privileges there (owned by "
                + ", ".join(sorted({owner for _, owner in foreign}))
                + ")",
                tuple(
                    f"ALTER SCHEMA {_quote(conn, name)} OWNER TO {_quote(conn, user)};"
                    for name, _ in sorted(foreign)
                ),
            )
        )
    return missing


def missing_privileges(
    conn: psycopg.Connection, database: str, *, database_exists: bool
) -> list[Missing]:
    """What the connected user lacks for open_warehouse and the run (empty: nothing). Reads
    only; `conn` reaches `database`, or the server's `postgres` while `database` is missing."""
    row = conn.execute(
        "select rolname, rolsuper, rolcreatedb, rolcreaterole, "
        "has_database_privilege(current_database(), 'CREATE') "
        "from pg_roles where rolname = current_user"
    ).fetchone()
    assert row is not None  # current_user is a role
    user, is_super, can_createdb, can_createrole, can_create_schemas = row
    if is_super:
        return []
    missing: list[Missing] = []
    if not database_exists and not can_createdb:
        missing.append(
            Missing(
                "CREATEDB",
                f"the database {database} does not exist",
                (f"CREATE DATABASE {_quote(conn, database)} OWNER {_quote(conn, user)};",),
            )
        )
    if database_exists:
        missing += _schemas_missing(conn, database, user, can_create=can_create_schemas)
    if not can_createrole or conn.info.server_version >= 160000:  # see _roles_missing
        roles = _roles_missing(conn, user, can_create=can_createrole)
        missing += [roles] if roles else []
    return missing


def missing_line(user: str, missing: Missing) -> str:
    """One line: the missing privilege, why it matters, and the SQL that grants it."""
    return (
        f"warehouse user {user} lacks {missing.privilege} ({missing.why}): an administrator "
        f"runs once: {' '.join(missing.statements)}  (all of it: make print-admin-sql)"
    )


def admin_sql(url: ConnectionURL, missing: list[Missing]) -> str:
    """The SQL script an administrator runs once (as a superuser or the database owner)."""
    if not missing:
        return f"-- warehouse user {url.user} has every privilege the run needs: nothing to run\n"
    lines = [f"-- run once as an administrator, for warehouse user {url.user} ({url.describe()})"]
    for item in missing:
        lines.append(f"-- {item.privilege}: {item.why}")
        lines += item.statements
    return "\n".join(lines) + "\n"

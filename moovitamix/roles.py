"""Least-privilege roles of the warehouse, created and granted idempotently by `ensure_roles`.

Six NOLOGIN group roles; a pipeline step runs as its role (`SET ROLE`, or `as_role(url, role)`,
which sets it at connection start), a person gets a LOGIN role that is a member of one of them:

  mvx_loader      writes `raw` (and dlt's `raw_staging`), writes rows in `monitoring`
  mvx_transformer reads `raw`; writes `staging`, `marts`, `marts_candidate`; rows in `monitoring`
  mvx_ml          reads the non-PII marts; writes `ml`, `recommendations`; rows in `monitoring`
  mvx_analyst     reads the non-PII marts and `monitoring`; writes nothing, creates nothing
  mvx_app         reads `recommendations` only
  mvx_pii_reader  mvx_analyst (it is a member) plus the PII mart `dim_users_pii`

Where the grants live, so that no rebuild loses them:
  - schemas: USAGE/CREATE here. `marts` and `marts_candidate` get the same grants, because the
    daily publish renames one to the other (schema ACLs and default privileges belong to the
    schema object and move with it, table ACLs move with the tables).
  - tables created later: ALTER DEFAULT PRIVILEGES FOR ROLE <the creating role>, e.g. what
    mvx_ml creates in `recommendations` is readable by mvx_app, what mvx_loader creates in `raw`
    by mvx_transformer. Not in the marts: their readers come from dbt's `grants` config (see
    dbt_project.yml), which dbt applies to every model it builds, whichever role builds it; a
    table created there by anything else is readable by nobody (fail closed for PII).
  - tables that exist already (a warehouse built before the roles): handed over to the role that
    writes their schema (ALTER ... OWNER), and granted like new ones; existing marts get SELECT
    for mvx_analyst and mvx_ml, except the PII marts (mvx_pii_reader only).

The connecting user (the URL's) is made a member of every role when it is a superuser or has
CREATEROLE, so that it can `SET ROLE`. On an external warehouse whose user has neither, a DBA
must first, once (see SECURITY.md):
    CREATE ROLE mvx_loader NOLOGIN;  ... (the six roles)
    GRANT mvx_loader, mvx_transformer, mvx_ml, mvx_analyst, mvx_app, mvx_pii_reader
        TO <warehouse user> WITH ADMIN OPTION;     -- PG 16+: WITH ADMIN TRUE, SET TRUE
and the warehouse user must own the database's schemas (it creates them: open_warehouse).
`ensure_roles` then creates nothing that exists and only grants what it may.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL

log = logging.getLogger(__name__)

LOADER = "mvx_loader"
TRANSFORMER = "mvx_transformer"
ML = "mvx_ml"
ANALYST = "mvx_analyst"
APP = "mvx_app"
PII_READER = "mvx_pii_reader"

ROLES: dict[str, str] = {
    LOADER: "writes raw and monitoring rows (the ingestion step)",
    TRANSFORMER: "reads raw; writes staging, marts, marts_candidate (dbt)",
    ML: "reads the non-PII marts; writes ml and recommendations (training, publishing)",
    ANALYST: "reads the non-PII marts and monitoring; writes nothing",
    APP: "reads recommendations only (the app)",
    PII_READER: "mvx_analyst plus the PII mart dim_users_pii",
}
# role -> the roles it is a member of (and inherits the privileges of)
MEMBERSHIPS: dict[str, tuple[str, ...]] = {PII_READER: (ANALYST,)}

MARTS_SCHEMAS = ("marts", "marts_candidate")
# Marts holding personal data (names, e-mails): mvx_pii_reader only.
PII_MARTS = frozenset({"dim_users_pii"})
# Who reads the other marts: dbt grants them (dbt_project.yml `+grants`); ensure_roles grants
# them on marts that exist already.
MART_READERS = (ANALYST, ML)
PII_MART_READERS = (PII_READER,)

TABLE_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
LOCK_KEY = 0x6D76785F726F6C  # "mvx_rol": one ensure_roles at a time per database
_RETRIES = 3  # roles are cluster-wide: ensure_roles on two databases at once may collide
# Not moovitamix.warehouse.connect: open_warehouse may call ensure_roles (no import cycle).
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class SchemaPlan:
    """What each role may do in one schema.

    owner:    the role that creates the schema's tables; existing ones are handed to it
    creators: USAGE + CREATE (the owner is one); default privileges are set for each of them
    usage:    USAGE only
    select:   SELECT on every table, now and (default privileges) later
    write:    SELECT/INSERT/UPDATE/DELETE on every table (+ its sequences), now and later
    maintain: MAINTAIN (ANALYZE, VACUUM; Postgres 17+) on every table, now and later
    dbt_grants: the tables' readers come from dbt's `grants` config: no default privileges, and
              `select` is granted on the existing tables only, PII marts to mvx_pii_reader
    """

    owner: str
    creators: tuple[str, ...]
    usage: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    maintain: tuple[str, ...] = ()
    dbt_grants: bool = False


_MARTS = SchemaPlan(
    owner=TRANSFORMER,
    creators=(TRANSFORMER,),
    usage=(ML, ANALYST),
    select=MART_READERS,
    dbt_grants=True,
)
PLAN: dict[str, SchemaPlan] = {
    "raw": SchemaPlan(
        owner=LOADER,
        creators=(LOADER,),
        usage=(TRANSFORMER,),
        select=(TRANSFORMER,),
        maintain=(TRANSFORMER,),  # dbt's on-run-start analyzes its sources
    ),
    "raw_staging": SchemaPlan(owner=LOADER, creators=(LOADER,)),  # dlt's merge staging dataset
    "staging": SchemaPlan(owner=TRANSFORMER, creators=(TRANSFORMER,)),
    "marts": _MARTS,
    "marts_candidate": _MARTS,
    "recommendations": SchemaPlan(owner=ML, creators=(ML,), usage=(APP,), select=(APP,)),
    "ml": SchemaPlan(owner=ML, creators=(ML,)),
    # every step records its rows here; `create table if not exists` needs CREATE even when the
    # table exists, hence three creators
    "monitoring": SchemaPlan(
        owner=LOADER,
        creators=(LOADER, TRANSFORMER, ML),
        usage=(ANALYST,),
        select=(ANALYST,),
        write=(LOADER, TRANSFORMER, ML),
    ),
}

_RELKIND_DDL = {
    "r": "table",
    "p": "table",
    "f": "foreign table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
}


class RolesError(RuntimeError):
    """The roles could not be created or granted; the message says what a DBA must do."""


@dataclass
class RolesResult:
    created: list[str] = field(default_factory=list)  # roles created
    memberships: list[str] = field(default_factory=list)  # "role -> member" granted
    adopted: list[str] = field(default_factory=list)  # "schema.relation: old owner -> role"

    def summary(self) -> str:
        return (
            f"roles: {len(self.created)} created, {len(self.memberships)} memberships granted, "
            f"{len(self.adopted)} existing objects handed to their role"
        )


def _ident_list(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _privileges(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(name) for name in names)  # fixed keywords, never input


def as_role(url: ConnectionURL, role: str) -> ConnectionURL:
    """The same URL, with the session running as `role` from its first statement on (libpq
    `options=-c role=...`): for tools that only take a URL (dlt, Great Expectations, psql).
    The user must be a member of `role` (ensure_roles makes the connecting user one)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    options = dict(url.options)
    # `--name=value` has no space: ConnectionURL renders spaces in the query as "+", which
    # libpq does not decode
    setting = f"--role={role}"
    options["options"] = f"{options['options']} {setting}" if "options" in options else setting
    return replace(url, options=tuple(options.items()))


def _server_version(conn: psycopg.Connection) -> int:
    row = conn.execute("show server_version_num").fetchone()
    return int(row[0]) if row else 0


def _create_roles(conn: psycopg.Connection, result: RolesResult) -> None:
    existing = {
        row[0]
        for row in conn.execute(
            "select rolname from pg_roles where rolname = any(%s)", (list(ROLES),)
        )
    }
    for role, purpose in ROLES.items():
        if role in existing:
            continue
        conn.execute(
            sql.SQL(
                "create role {} nologin nosuperuser nocreatedb nocreaterole noreplication "
                "nobypassrls"
            ).format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("comment on role {} is {}").format(
                sql.Identifier(role), sql.Literal(f"MooVitamix: {purpose}")
            )
        )
        result.created.append(role)
    risky = conn.execute(
        "select rolname from pg_roles where rolname = any(%s) and (rolsuper or rolbypassrls)",
        (list(ROLES),),
    ).fetchall()
    for (role,) in risky:
        log.warning("role %s is a superuser or bypasses RLS: its grants restrict nothing", role)


def _is_member(conn: psycopg.Connection, role: str, member: str) -> bool:
    row = conn.execute(
        """select exists (select 1 from pg_auth_members m
                          join pg_roles r on r.oid = m.roleid
                          join pg_roles u on u.oid = m.member
                          where r.rolname = %s and u.rolname = %s)""",
        (role, member),
    ).fetchone()
    return bool(row and row[0])


def _grant_memberships(conn: psycopg.Connection, result: RolesResult) -> None:
    pairs = [(role, member) for member, roles in MEMBERSHIPS.items() for role in roles]
    row = conn.execute(
        "select session_user, rolsuper, rolcreaterole from pg_roles where rolname = session_user"
    ).fetchone()
    assert row is not None
    user, is_super, can_createrole = str(row[0]), bool(row[1]), bool(row[2])
    missing_for_user = [role for role in ROLES if not _is_member(conn, role, user)]
    if is_super or can_createrole:
        pairs += [(role, user) for role in missing_for_user]
    elif missing_for_user:
        raise RolesError(
            f"warehouse user {user} is not a member of {', '.join(missing_for_user)} and may not "
            f"grant roles (no CREATEROLE): a DBA must run  GRANT {', '.join(missing_for_user)} "
            f"TO {user} WITH ADMIN OPTION  (see SECURITY.md)"
        )
    for role, member in pairs:
        if _is_member(conn, role, member):
            continue
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), sql.Identifier(member)))
        result.memberships.append(f"{role} -> {member}")


def _adopt_existing(conn: psycopg.Connection, schema: str, owner: str, result: RolesResult) -> None:
    """Hand the schema's relations to the role that writes it (a warehouse built before the
    roles, or by hand): the role's step must be able to drop, rename and alter them."""
    rows = conn.execute(
        """select c.relname, c.relkind::text, pg_get_userbyid(c.relowner)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = %s and c.relkind in ('r', 'p', 'f', 'v', 'm', 'S')
             and pg_get_userbyid(c.relowner) <> %s
             -- a sequence of a serial/identity column follows its table
             and not (c.relkind = 'S' and exists (
                 select 1 from pg_depend d
                 where d.classid = 'pg_class'::regclass and d.objid = c.oid
                   and d.deptype in ('a', 'i')))
           order by c.relkind desc, c.relname""",
        (schema, owner),
    ).fetchall()
    for name, kind, old_owner in rows:
        conn.execute(
            sql.SQL("alter {} {} owner to {}").format(
                sql.SQL(_RELKIND_DDL[kind]), sql.Identifier(schema, name), sql.Identifier(owner)
            )
        )
        result.adopted.append(f"{schema}.{name}: {old_owner} -> {owner}")


def _tables(conn: psycopg.Connection, schema: str, kinds: str = "rpfvm") -> list[str]:
    rows = conn.execute(
        """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = %s and c.relkind = any(%s) order by c.relname""",
        (schema, list(kinds)),
    ).fetchall()
    return [str(row[0]) for row in rows]


def apply_schema_grants(
    conn: psycopg.Connection,
    schema: str,
    *,
    extra_creators: Sequence[str] = (),
    result: RolesResult | None = None,
) -> None:
    """The grants of one schema of PLAN (create it first): schema privileges, default
    privileges for what its creators make later, and the tables it holds now. Idempotent.

    Call it again after re-creating a schema (e.g. `marts_candidate` dropped and re-made):
    a new schema object has none of the old one's grants."""
    plan = PLAN[schema]
    result = result if result is not None else RolesResult()
    version = _server_version(conn)
    ident = sql.Identifier(schema)
    _adopt_existing(conn, schema, plan.owner, result)

    usage = [*plan.creators, *plan.usage]
    conn.execute(sql.SQL("grant usage on schema {} to {}").format(ident, _ident_list(usage)))
    conn.execute(
        sql.SQL("grant create on schema {} to {}").format(ident, _ident_list(plan.creators))
    )

    grants: list[tuple[tuple[str, ...], tuple[str, ...]]] = []  # (privileges, grantees)
    if plan.select and not plan.dbt_grants:
        grants.append((("SELECT",), plan.select))
    if plan.write:
        grants.append((TABLE_WRITE, plan.write))
    if plan.maintain and version >= 170000:
        grants.append((("MAINTAIN",), plan.maintain))

    # tables created later: default privileges of each role that creates tables here
    for creator in (*plan.creators, *extra_creators):
        for privileges, grantees in grants:
            others = [g for g in grantees if g != creator]
            if not others:
                continue
            conn.execute(
                sql.SQL(
                    "alter default privileges for role {} in schema {} grant {} on tables to {}"
                ).format(
                    sql.Identifier(creator), ident, _privileges(privileges), _ident_list(others)
                )
            )
        if plan.write:
            others = [g for g in plan.write if g != creator]
            if others:
                conn.execute(
                    sql.SQL(
                        "alter default privileges for role {} in schema {} "
                        "grant usage, select on sequences to {}"
                    ).format(sql.Identifier(creator), ident, _ident_list(others))
                )

    # tables that exist now
    for privileges, grantees in grants:
        conn.execute(
            sql.SQL("grant {} on all tables in schema {} to {}").format(
                _privileges(privileges), ident, _ident_list(grantees)
            )
        )
    if plan.write:
        conn.execute(
            sql.SQL("grant usage, select on all sequences in schema {} to {}").format(
                ident, _ident_list(plan.write)
            )
        )
    if plan.dbt_grants:
        _grant_existing_marts(conn, schema)


def _grant_existing_marts(conn: psycopg.Connection, schema: str) -> None:
    """What dbt's `grants` config gives a mart, for marts built before it (dbt adds, never
    revokes on Postgres: so ensure_roles also takes back a PII mart's stray grants)."""
    non_pii_readers = {ANALYST, ML, APP, "public"}
    for table in _tables(conn, schema):
        name = sql.Identifier(schema, table)
        if table in PII_MARTS:
            conn.execute(
                sql.SQL("revoke all on {} from public, {}").format(
                    name, _ident_list(sorted(non_pii_readers - {"public"}))
                )
            )
            readers = PII_MART_READERS
        else:
            readers = MART_READERS
        conn.execute(sql.SQL("grant select on {} to {}").format(name, _ident_list(readers)))


def _ensure(conn: psycopg.Connection, result: RolesResult) -> None:
    conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    _create_roles(conn, result)
    _grant_memberships(conn, result)
    # Postgres 15+ already has no CREATE on `public` for PUBLIC; older servers do (CVE-2018-1058)
    conn.execute(
        "do $$ begin if exists (select 1 from pg_namespace where nspname = 'public') then "
        "revoke create on schema public from public; end if; end $$"
    )
    row = conn.execute("select session_user").fetchone()
    admin = str(row[0]) if row else ""
    for schema in PLAN:
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        # monitoring: the orchestrator (the connecting user) writes the run ledger there
        extra = (admin,) if schema == "monitoring" and admin not in ROLES else ()
        apply_schema_grants(conn, schema, extra_creators=extra, result=result)


def ensure_roles(url: ConnectionURL) -> RolesResult:
    """Create the roles, make the connecting user a member, create the schemas of PLAN and
    grant them; hand existing objects to their roles. Idempotent; one transaction per database.
    """
    result = RolesResult()
    for attempt in range(_RETRIES):
        result = RolesResult()
        try:
            with psycopg.connect(url.url(), connect_timeout=CONNECT_TIMEOUT_S) as conn:
                _ensure(conn, result)
            break
        except (
            psycopg.errors.UniqueViolation,
            psycopg.errors.DuplicateObject,
            psycopg.errors.InternalError_,  # "tuple concurrently updated"
        ) as exc:
            # another database of the cluster created a role or membership at the same moment
            if attempt + 1 == _RETRIES:
                raise RolesError(
                    f"creating the roles collided with another process: {exc}"
                ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = str(exc).strip().splitlines()[0]
            raise RolesError(
                f"cannot set up the warehouse roles as {url.user} ({reason}): the warehouse "
                "user needs CREATEROLE (or a DBA creates the roles and grants them to it WITH "
                "ADMIN OPTION) and must own the schemas; see SECURITY.md"
            ) from None
    if result.created or result.memberships or result.adopted:
        log.info("%s", result.summary())
    return result


def audit_grants(conn: psycopg.Connection) -> list[str]:
    """What is wrong with the grants now (empty: all hold): a PII mart readable by anyone but
    mvx_pii_reader, a mart its readers cannot read, a recommendations table the app cannot
    read, a CREATE privilege of the analyst. For tests and for the daily run's audit."""
    problems: list[str] = []

    def can(role: str, table: str, privilege: str = "SELECT") -> bool:
        row = conn.execute(
            "select has_table_privilege(%s, %s, %s)", (role, table, privilege)
        ).fetchone()
        return bool(row and row[0])

    present = {
        str(row[0])
        for row in conn.execute(
            "select nspname from pg_namespace where nspname = any(%s)", (list(PLAN),)
        )
    }
    for schema in (s for s in MARTS_SCHEMAS if s in present):
        for table in _tables(conn, schema, "rpm"):
            qualified = sql.Identifier(schema, table).as_string(conn)
            if table in PII_MARTS:
                problems += [
                    f"{role} can read the PII mart {schema}.{table}"
                    for role in (ANALYST, ML, APP)
                    if can(role, qualified)
                ]
                if not can(PII_READER, qualified):
                    problems.append(f"{PII_READER} cannot read {schema}.{table}")
            else:
                problems += [
                    f"{role} cannot read {schema}.{table}"
                    for role in MART_READERS
                    if not can(role, qualified)
                ]
    if "recommendations" in present:
        for table in _tables(conn, "recommendations", "rpm"):
            if table.endswith("__new"):
                continue  # staged, not yet published
            qualified = sql.Identifier("recommendations", table).as_string(conn)
            if not can(APP, qualified):
                problems.append(f"{APP} cannot read recommendations.{table}")
    rows = conn.execute(
        """select nspname from pg_namespace
           where has_schema_privilege(%s, oid, 'CREATE') order by nspname""",
        (ANALYST,),
    ).fetchall()
    problems += [f"{ANALYST} may create in schema {row[0]}" for row in rows]
    row = conn.execute(
        "select has_database_privilege(%s, current_database(), 'CREATE')", (ANALYST,)
    ).fetchone()
    if row and row[0]:
        problems.append(f"{ANALYST} may create schemas in the database")
    return problems

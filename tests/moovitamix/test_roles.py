"""The warehouse roles (moovitamix/roles.sql) on the real embedded Postgres: each role can do
what its step or its people need and nothing else, before and after the daily run's rebuilds
(marts built into `marts_candidate` then swapped in by renaming schemas, recommendations
replaced by create `__new` + drop + rename)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from moovitamix import roles
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ANALYST, APP, LOADER, ML, PII_READER, TRANSFORMER
from tests.e2e.daily_helpers import audit_grants

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# every mart of the dbt project (its model files), the PII one included
MARTS = sorted(p.stem for p in (REPO / "dbt_project" / "models" / "marts").glob("*.sql"))
NON_PII_MARTS = [m for m in MARTS if not m.endswith("_pii")]
PII_MART = "dim_users_pii"
MART_READERS, PII_MART_READERS = (ANALYST, ML), (PII_READER,)  # dbt's `grants` config
Denied = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def warehouse(fresh_warehouse: ConnectionURL) -> ConnectionURL:
    roles.ensure_roles(fresh_warehouse)
    return fresh_warehouse


@contextmanager
def session(url: ConnectionURL, role: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection as the URL's user, switched to `role` by SET ROLE (as the
    pipeline's steps will)."""
    with psycopg.connect(url.url(), autocommit=True) as conn:
        if role:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        yield conn


def execute(url: ConnectionURL, role: str, statement: str) -> list[tuple[object, ...]]:
    with session(url, role) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


def assert_denied(url: ConnectionURL, role: str, statement: str) -> None:
    with pytest.raises(Denied):
        execute(url, role, statement)


def build_marts(url: ConnectionURL, schema: str) -> None:
    """Stand-ins for the dbt build of the marts into `schema`, as dbt does it running as
    mvx_transformer: create each table, then apply the model's `grants` config."""
    with session(url, TRANSFORMER) as conn:
        for mart in MARTS:
            table = sql.Identifier(schema, mart)
            conn.execute(sql.SQL("drop table if exists {}").format(table))
            conn.execute(sql.SQL("create table {} as select 1::bigint as user_id").format(table))
            readers = PII_MART_READERS if mart == PII_MART else MART_READERS
            conn.execute(
                sql.SQL("grant select on {} to {}").format(
                    table, sql.SQL(", ").join(map(sql.Identifier, readers))
                )
            )


def swap_marts(url: ConnectionURL) -> None:
    """moovitamix/publication.py's publish: the two schemas trade names in one transaction."""
    with psycopg.connect(url.url()) as conn:
        for old, new in (
            ("marts", "marts__swap"),
            ("marts_candidate", "marts"),
            ("marts__swap", "marts_candidate"),
        ):
            conn.execute(
                sql.SQL("alter schema {} rename to {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )


def replace_recommendations(url: ConnectionURL, table: str, rows: int) -> None:
    """ml/publish.py's pattern, as mvx_ml: stage `<table>__new`, then drop + rename it."""
    live = sql.Identifier("recommendations", table)
    new = sql.Identifier("recommendations", f"{table}__new")
    with session(url, ML) as conn, conn.transaction():
        conn.execute(sql.SQL("drop table if exists {}").format(new))
        conn.execute(
            sql.SQL(
                "create table {} as select g::bigint as user_id from generate_series(1, {}) g"
            ).format(new, sql.Literal(rows))
        )
        conn.execute(sql.SQL("drop table if exists {}").format(live))
        conn.execute(sql.SQL("alter table {} rename to {}").format(new, sql.Identifier(table)))


def acl_snapshot(url: ConnectionURL) -> dict[str, object]:
    with session(url) as conn:
        return {
            "schemas": conn.execute(
                "select nspname, pg_get_userbyid(nspowner), nspacl::text from pg_namespace "
                "order by nspname"
            ).fetchall(),
            "defaults": conn.execute(
                "select pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text, "
                "defaclobjtype, defaclacl::text from pg_default_acl order by 1, 2, 3"
            ).fetchall(),
            "tables": conn.execute(
                "select relnamespace::regnamespace::text, relname, pg_get_userbyid(relowner), "
                "relacl::text from pg_class where relkind in ('r', 'v', 'm', 'p') "
                "and relnamespace::regnamespace::text = any(%s) order by 1, 2",
                (list(roles.SCHEMAS),),
            ).fetchall(),
            "members": conn.execute(
                "select roleid::regrole::text, member::regrole::text from pg_auth_members "
                "where roleid::regrole::text like 'mvx\\_%%' order by 1, 2"
            ).fetchall(),
        }


def test_ensure_roles_twice_changes_nothing(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    with session(url) as conn:
        conn.execute("create table raw.users (user_id bigint)")  # built before the roles
        conn.execute("create table marts.dim_users (user_id bigint)")
    roles.ensure_roles(url)
    before = acl_snapshot(url)
    assert roles.ensure_roles(url) == []
    assert acl_snapshot(url) == before


def test_roles_are_nologin_groups_the_connecting_user_can_set(warehouse: ConnectionURL) -> None:
    with session(warehouse) as conn:
        rows = conn.execute(
            "select rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "from pg_roles where rolname = any(%s) order by rolname",
            (list(roles.ROLES),),
        ).fetchall()
        assert [r[0] for r in rows] == sorted(roles.ROLES)
        assert all(not any(r[1:]) for r in rows), rows
        for role in roles.ROLES:
            member = conn.execute("select pg_has_role(session_user, %s, 'member')", (role,))
            assert member.fetchone() == (True,)
        inherits = conn.execute("select pg_has_role(%s, %s, 'usage')", (PII_READER, ANALYST))
        assert inherits.fetchone() == (True,)
    with psycopg.connect(roles.as_role(warehouse, ANALYST).url()) as conn:
        assert conn.execute("select current_user").fetchone() == (ANALYST,)


def test_analyst_reads_every_non_pii_mart_before_and_after_the_swap(
    warehouse: ConnectionURL,
) -> None:
    build_marts(warehouse, "marts")  # yesterday's publication
    build_marts(warehouse, "marts_candidate")  # today's build
    for _ in range(2):  # the published marts, then the swapped-in candidate (and back)
        for schema in ("marts", "marts_candidate"):
            for mart in NON_PII_MARTS:
                for role in (ANALYST, PII_READER, ML):
                    assert execute(warehouse, role, f"select * from {schema}.{mart}") == [(1,)]
            for role in (ANALYST, ML, APP, LOADER):
                assert_denied(warehouse, role, f"select * from {schema}.{PII_MART}")
            assert execute(warehouse, PII_READER, f"select * from {schema}.{PII_MART}") == [(1,)]
        with session(warehouse) as conn:
            assert audit_grants(conn) == []
        swap_marts(warehouse)
        build_marts(warehouse, "marts_candidate")  # the next day rebuilds the candidate


def test_analyst_cannot_read_raw_pii_or_staging_nor_write_anything(
    warehouse: ConnectionURL,
) -> None:
    with session(warehouse, LOADER) as conn:
        conn.execute("create table raw.users (user_id bigint, email text)")
        conn.execute("create table monitoring.ingestion_stats (run_id text)")
    with session(warehouse, TRANSFORMER) as conn:
        conn.execute("create view staging.stg_moovitamix__users as select * from raw.users")
    build_marts(warehouse, "marts")
    build_marts(warehouse, "marts_candidate")
    with session(warehouse, ML) as conn:
        conn.execute("create table ml.model_runs (model_run_id text)")
    replace_recommendations(warehouse, "user_top_tracks", 3)

    for statement in (
        "select * from raw.users",
        "select * from staging.stg_moovitamix__users",
        f"select * from marts.{PII_MART}",
        f"select * from marts_candidate.{PII_MART}",
        "select * from ml.model_runs",
        "select * from recommendations.user_top_tracks",
        "insert into recommendations.user_top_tracks values (9)",
        "delete from recommendations.user_top_tracks",
        "insert into marts.dim_users values (9)",
        "update marts.dim_users set user_id = 2",
        "truncate marts.fct_listens",
        "drop table marts.dim_users",
        "insert into monitoring.ingestion_stats values ('x')",
        "insert into raw.users values (1, 'a@b.c')",
    ):
        assert_denied(warehouse, ANALYST, statement)
    # what the analyst may do: the non-PII marts and monitoring
    assert execute(warehouse, ANALYST, "select count(*) from monitoring.ingestion_stats") == [(0,)]


def test_analyst_creates_nothing_in_any_schema(warehouse: ConnectionURL) -> None:
    with session(warehouse) as conn:
        schemas = [
            row[0]
            for row in conn.execute(
                "select nspname from pg_namespace where nspname not like 'pg\\_%' "
                "and nspname <> 'information_schema' order by nspname"
            )
        ]
    assert {"public", *roles.SCHEMAS} <= set(schemas)
    for schema in schemas:
        for statement in (
            f"create table {schema}.mine (x int)",
            f"create view {schema}.mine as select 1",
            f"create function {schema}.mine() returns int language sql as 'select 1'",
        ):
            assert_denied(warehouse, ANALYST, statement)
    assert_denied(warehouse, ANALYST, "create schema mine")
    with session(warehouse) as conn:
        for role in (ANALYST, PII_READER, APP):
            create_db = conn.execute(
                "select has_database_privilege(%s, current_database(), 'CREATE')", (role,)
            )
            assert create_db.fetchone() == (False,)
        assert audit_grants(conn) == []


def test_app_reads_only_the_recommendations_also_once_replaced(
    warehouse: ConnectionURL,
) -> None:
    with session(warehouse, LOADER) as conn:
        conn.execute("create table raw.users (user_id bigint)")
        conn.execute("create table monitoring.pipeline_runs (run_id text)")
    build_marts(warehouse, "marts")
    with session(warehouse, ML) as conn:
        conn.execute("create table ml.model_runs (model_run_id text)")
    replace_recommendations(warehouse, "user_top_tracks", 3)
    replace_recommendations(warehouse, "similar_tracks", 2)
    assert execute(warehouse, APP, "select count(*) from recommendations.user_top_tracks") == [(3,)]
    replace_recommendations(warehouse, "user_top_tracks", 5)  # the next day's publish
    assert execute(warehouse, APP, "select count(*) from recommendations.user_top_tracks") == [(5,)]
    assert execute(warehouse, APP, "select count(*) from recommendations.similar_tracks") == [(2,)]
    for statement in (
        "select * from marts.dim_users",
        f"select * from marts.{PII_MART}",
        "select * from raw.users",
        "select * from ml.model_runs",
        "select * from monitoring.pipeline_runs",
        "insert into recommendations.user_top_tracks values (9)",
        "create table recommendations.mine (x int)",
    ):
        assert_denied(warehouse, APP, statement)


def test_pii_reader_reads_the_pii_mart_and_what_the_analyst_reads(
    warehouse: ConnectionURL,
) -> None:
    build_marts(warehouse, "marts")
    with session(warehouse, LOADER) as conn:
        conn.execute("create table raw.users (user_id bigint, email text)")
    assert execute(warehouse, PII_READER, f"select * from marts.{PII_MART}") == [(1,)]
    assert execute(warehouse, PII_READER, "select * from marts.dim_users") == [(1,)]
    assert_denied(warehouse, PII_READER, "select * from raw.users")
    assert_denied(warehouse, PII_READER, f"delete from marts.{PII_MART}")


def test_each_pipeline_role_writes_its_schemas_and_reads_its_inputs(
    warehouse: ConnectionURL,
) -> None:
    with session(warehouse, LOADER) as conn:  # dlt: raw and its merge staging dataset
        conn.execute("create table raw.users (user_id bigint)")
        conn.execute("create table raw_staging.users (user_id bigint)")
        conn.execute("insert into raw.users values (1)")
        conn.execute("create table monitoring.ingestion_stats (run_id text)")
    with session(warehouse, TRANSFORMER) as conn:  # dbt
        assert conn.execute("select count(*) from raw.users").fetchone() == (1,)
        conn.execute("create view staging.stg_users as select * from raw.users")
        conn.execute("create table marts.dim_users as select * from staging.stg_users")
        conn.execute("insert into monitoring.ingestion_stats values ('validate')")
        conn.execute("create table monitoring.validation_results (run_id text)")
    with session(warehouse, ML) as conn:
        conn.execute("create table ml.model_runs (model_run_id text)")
        conn.execute("create table recommendations.user_top_tracks (user_id bigint)")
        conn.execute("insert into monitoring.validation_results values ('train')")
    with session(warehouse) as conn:
        owner = conn.execute(
            "select pg_get_userbyid(relowner) from pg_class where oid = 'marts.dim_users'::regclass"
        )
        assert owner.fetchone() == (TRANSFORMER,)
        # dbt's on-run-start analyzes its sources: MAINTAIN, Postgres 17+ (else a warning)
        maintain = conn.execute(
            "select current_setting('server_version_num')::int < 170000 "
            "or has_table_privilege(%s, 'raw.users', 'MAINTAIN')",
            (TRANSFORMER,),
        )
        assert maintain.fetchone() == (True,)
    for role, statement in (
        (LOADER, "create table marts.x (x int)"),
        (LOADER, "select * from marts.dim_users"),
        (LOADER, "drop table monitoring.validation_results"),
        (TRANSFORMER, "insert into raw.users values (2)"),
        (TRANSFORMER, "create table raw.x (x int)"),
        (TRANSFORMER, "create table recommendations.x (x int)"),
        (ML, "select * from raw.users"),
        (ML, "create table marts.x (x int)"),
        (ML, "insert into raw.users values (2)"),
        # marts made outside dbt carry no grants: nobody but their owner reads them
        (ML, "select * from marts.dim_users"),
        (ANALYST, "select * from marts.dim_users"),
    ):
        assert_denied(warehouse, role, statement)
    assert execute(warehouse, ANALYST, "select count(*) from monitoring.validation_results") == [
        (1,)
    ]


def test_a_warehouse_built_before_the_roles_is_taken_over(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    with session(url) as conn:  # all of it built by the superuser, a stray grant on the PII
        conn.execute("create table raw.users (user_id bigint, email text)")
        conn.execute("create view staging.stg_users as select * from raw.users")
        for mart in MARTS:
            conn.execute(
                sql.SQL("create table {} (user_id bigint)").format(sql.Identifier("marts", mart))
            )
        conn.execute(f"grant select on marts.{PII_MART} to public")
        conn.execute("create table recommendations.user_top_tracks (user_id bigint)")
        conn.execute("create table monitoring.pipeline_runs (id serial, run_id text)")
    changes = roles.ensure_roles(url)
    assert "adopted marts.dim_users: postgres -> mvx_transformer" in changes
    assert "adopted staging.stg_users: postgres -> mvx_transformer" in changes
    for mart in NON_PII_MARTS:
        execute(url, ANALYST, f"select * from marts.{mart}")
    assert_denied(url, ANALYST, f"select * from marts.{PII_MART}")
    execute(url, PII_READER, f"select * from marts.{PII_MART}")
    execute(url, APP, "select * from recommendations.user_top_tracks")
    execute(url, ANALYST, "select * from monitoring.pipeline_runs")
    execute(url, ML, "insert into monitoring.pipeline_runs (run_id) values ('r')")  # + sequence
    execute(url, TRANSFORMER, "select * from staging.stg_users")  # the view runs as its owner
    execute(url, TRANSFORMER, "drop table marts.dim_genres")  # dbt replaces what it owns
    with session(url) as conn:
        assert audit_grants(conn) == []


def test_a_recreated_schema_regains_its_grants(warehouse: ConnectionURL) -> None:
    with session(warehouse) as conn:
        conn.execute("drop schema marts_candidate cascade")
        conn.execute("create schema marts_candidate")
    assert_denied(warehouse, TRANSFORMER, "create table marts_candidate.x (x int)")
    with psycopg.connect(warehouse.url()) as conn:
        roles.apply_roles(conn)
    build_marts(warehouse, "marts_candidate")
    execute(warehouse, ANALYST, "select * from marts_candidate.dim_users")


def test_audit_grants_names_a_pii_mart_others_can_read(warehouse: ConnectionURL) -> None:
    build_marts(warehouse, "marts")
    with session(warehouse) as conn:
        conn.execute(f"grant select on marts.{PII_MART} to {ANALYST}")
        conn.execute(f"grant create on schema marts to {ANALYST}")
        problems = audit_grants(conn)
    assert f"{ANALYST} can read the PII mart marts.{PII_MART}" in problems
    assert f"{ANALYST} may create in schema marts" in problems
    roles.ensure_roles(warehouse)  # takes the PII grant back (the CREATE is the DBA's doing)
    with session(warehouse) as conn:
        assert audit_grants(conn) == [f"{ANALYST} may create in schema marts"]


def test_a_user_that_may_not_grant_roles_gets_a_clear_error(warehouse: ConnectionURL) -> None:
    with session(warehouse) as conn:
        conn.execute("drop role if exists mvx_test_plain_user")
        conn.execute("create role mvx_test_plain_user login")
    try:
        with pytest.raises(roles.RolesError, match="DBA must run"):
            roles.ensure_roles(replace(warehouse, user="mvx_test_plain_user", password=""))
    finally:
        with session(warehouse) as conn:
            conn.execute("drop role mvx_test_plain_user")


def test_psql_role_option_runs_the_shell_as_the_analyst(
    warehouse: ConnectionURL, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "WAREHOUSE_URL": warehouse.url(),
        "MOOVITAMIX_DATA_DIR": str(tmp_path / "data"),
        "MOOVITAMIX_LOGS_DIR": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moovitamix",
            "warehouse",
            "--role",
            ANALYST,
            "psql",
            "-At",
            "-c",
            "select current_user",
            "-c",
            "select * from raw._rejected",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert done.stdout.strip() == ANALYST
    assert "permission denied for schema raw" in done.stderr

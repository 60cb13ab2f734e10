"""The roles' grants across real rebuilds: two whole daily runs (`python -m orchestrator` in a copy
of the project, the simulator over HTTP, the embedded Postgres), the first building the marts
and publishing them, the second building the candidate again with dbt (yesterday's marts, now
incremental) and publishing it by the real schema swap and the real replacement of the lists.
After each: every mart readable by its readers and by no one else, the PII mart by the PII
reader only, the app reading this run's lists and `fct_listens` (SECURITY.md) only
(tests/moovitamix/test_roles.py checks the same rules on stand-ins for dbt and the publish)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ANALYST, APP, LOADER, ML, PII_READER
from tests.conftest import SimulatorFactory
from tests.e2e.daily_helpers import (
    SIMULATOR_ARGS,
    audit_grants,
    daily_env,
    published_by,
    query,
    run_daily,
    set_simulator,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PII_MART = "dim_users_pii"
LISTS = ("user_top_tracks", "similar_tracks")


def _can_read(url: ConnectionURL, role: str, schema: str, table: str) -> bool:
    """A real read as `role` (SET ROLE, as the roles' people and steps do): allowed or denied."""
    with psycopg.connect(url.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        try:
            statement = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
            conn.execute(statement).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return False
        return True


def _assert_grants_hold(url: ConnectionURL, run_id: str) -> None:
    marts = [
        table
        for (table,) in query(
            url, "select tablename from pg_tables where schemaname = 'marts' order by 1"
        )
    ]
    assert PII_MART in marts and "dim_users" in marts and "fct_listens" in marts, marts
    for mart in marts:
        readers = {PII_READER} if mart == PII_MART else {ANALYST, ML, PII_READER}
        if mart == "fct_listens":  # SECURITY.md: serving folds a user's listens in
            readers.add(APP)
        for role in (ANALYST, ML, PII_READER, APP, LOADER):
            assert _can_read(url, role, "marts", mart) == (role in readers), (role, mart)
    for table in LISTS:
        assert _can_read(url, APP, "recommendations", table), table
        assert not _can_read(url, ANALYST, "recommendations", table), table
    for schema, table in (("raw", "users"), ("ml", "model_runs"), ("monitoring", "pipeline_runs")):
        assert not _can_read(url, APP, schema, table), (schema, table)
        analyst_reads = schema == "monitoring"  # the run ledger; raw and ml are not his
        assert _can_read(url, ANALYST, schema, table) == analyst_reads, (schema, table)
    (served_run,) = query(
        url,
        "select distinct m.run_id from recommendations.user_top_tracks as r "
        "join ml.model_runs as m using (model_run_id)",
    )
    assert served_run == (run_id,), "the app reads the lists this run published"
    with psycopg.connect(url.url()) as conn:
        assert audit_grants(conn) == []  # the candidate (yesterday's marts) included


def _run(env: dict[str, str], root: Path, url: ConnectionURL) -> str:
    result = run_daily(env, root)
    assert result.returncode == exit_codes.OK, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = published_by(url)
    assert f"MooVitamix daily run {run_id}:" in result.stdout
    return run_id


def test_the_grants_hold_after_two_real_builds_and_publishes(
    warehouse_env: ConnectionURL, start_simulator: SimulatorFactory, project_copy: Path
) -> None:
    api = start_simulator(*SIMULATOR_ARGS)
    env = daily_env(api)
    day0 = _run(env, project_copy, warehouse_env)
    _assert_grants_hold(warehouse_env, day0)
    # day 1: dbt rebuilds the candidate (day 0's marts before it) and the publish swaps it in
    set_simulator(api, day=1)
    day1 = _run(env, project_copy, warehouse_env)
    assert day1 != day0
    (comment,) = query(
        warehouse_env, "select obj_description('marts_candidate'::regnamespace, 'pg_namespace')"
    )
    assert comment[0].startswith(f"published by run {day0}"), comment
    _assert_grants_hold(warehouse_env, day1)

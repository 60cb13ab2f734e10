"""Driving the daily run (`bin/daily` as cron starts it, `python -m orchestrator`) as real
subprocesses started in a copy of the project (the `project_copy` fixture: what a run writes
in its project root, reports/, artifacts/, dbt's target/, GX's uncommitted/, stays there),
fingerprints of the warehouse to compare runs with (counts and content hashes of
what readers see), and an audit of the grants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ANALYST, APP, ML, PII_READER
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
# Small enough for a run of a few seconds per step, realistic enough for ALS to have signal.
SIMULATOR_ARGS = ("--profile", "realistic", "--seed", "3", "--users", "300", "--tracks", "150")
DAILY = [sys.executable, "-m", "orchestrator"]
TIMEOUT_S = 600


def daily_env(api_url: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment (WAREHOUSE_URL and dirs come from `warehouse_env`) plus the API."""
    env = {**os.environ, "MOOVITAMIX_SIMULATOR_ARGS": " ".join(SIMULATOR_ARGS)}
    if api_url:
        env["MOOVITAMIX_API_URL"] = api_url
    return {**env, **(extra or {})}


def cron_daily(
    root: Path, home: Path, warehouse: ConnectionURL, extra: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`<root>/bin/daily` as cron starts it (the README's cron line): `env -i`, a minimal PATH,
    the warehouse, data and logs under `home`, the built-in simulator with the tests' arguments,
    plus `extra`."""
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "WAREHOUSE_URL": warehouse.url(),
        "MOOVITAMIX_DATA_DIR": str(home / "data"),
        "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
        "MOOVITAMIX_SIMULATOR_ARGS": " ".join(SIMULATOR_ARGS),
        **(extra or {}),
    }
    return subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
         str(root / "bin" / "daily")],
        cwd=home, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def run_daily(env: Mapping[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    """`python -m orchestrator` with `root`, a copy of the project, as its project root."""
    return subprocess.run(
        DAILY, cwd=root, env=dict(env), capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def start_daily(env: Mapping[str, str], log: Path, root: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            DAILY, cwd=root, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    wait_until(condition, what, timeout_s, poll_s=0.2)


def set_simulator(api_url: str, **state: Any) -> None:
    """POST /_admin/state: `day=N`, `faults=[...]`."""
    response = httpx.post(f"{api_url}/_admin/state", json=state, timeout=60)
    response.raise_for_status()


def simulator_totals(api_url: str) -> dict[str, int]:
    return {
        endpoint: int(httpx.get(f"{api_url}/{endpoint}", params={"size": 1}).json()["total"])
        for endpoint in ("tracks", "users", "listen_history")
    }


def query(url: ConnectionURL, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.url()) as conn:
        return conn.execute(statement, params).fetchall()


def scalar(url: ConnectionURL, statement: str, params: Any = None) -> Any:
    return query(url, statement, params)[0][0]


def runs(url: ConnectionURL) -> list[tuple[str, str, str | None]]:
    return query(
        url, "select run_id, status, failed_step from monitoring.pipeline_runs order by started_at"
    )


def step_started(url: ConnectionURL, step: str) -> bool:
    try:
        statement = "select count(*) from monitoring.pipeline_run_steps where step = %s"
        return bool(scalar(url, statement, (step,)))
    except psycopg.errors.UndefinedTable:
        return False


def published_by(url: ConnectionURL) -> str:
    """The run that published the marts readers see (from the schema's comment)."""
    comment = scalar(url, "select obj_description('marts'::regnamespace, 'pg_namespace')")
    return str(comment).split(" by run ", 1)[1].split(" ", 1)[0]


# What readers see, as counts and hashes that do not depend on load ids or timestamps.
FINGERPRINT = {
    "raw.tracks": "select count(*), md5(string_agg(record_hash, ',' order by record_hash)) "
    "from raw.tracks where _dlt_valid_to is null",
    "raw.users": "select count(*), md5(string_agg(record_hash, ',' order by record_hash)) "
    "from raw.users where _dlt_valid_to is null",
    "raw.listen_history": "select count(*), md5(string_agg(record_hash, ',' order by record_hash)) "
    "from raw.listen_history where _dlt_valid_to is null",
    "raw versions": "select (select count(*) from raw.tracks) + (select count(*) from raw.users)"
    " + (select count(*) from raw.listen_history),"
    " (select count(*) from raw.listen_history__items)",
    "marts.dim_users": "select count(*), md5(string_agg(user_id::text, ',' order by user_id)) "
    "from marts.dim_users",
    "marts.dim_tracks": "select count(*), md5(string_agg(track_id::text, ',' order by track_id)) "
    "from marts.dim_tracks",
    "marts.fct_listens": "select count(*), md5(string_agg(user_id || ':' || track_id || ':' "
    "|| listen_count, ',' order by user_id, track_id)) from marts.fct_listens",
    "marts.user_genre_features": "select count(*), round(sum(listen_share)::numeric, 6) "
    "from marts.user_genre_features",
    "marts.track_popularity": "select count(*), null from marts.track_popularity",
    "recommendations.user_top_tracks": "select count(*), count(distinct user_id) "
    "from recommendations.user_top_tracks",
    "recommendations.similar_tracks": "select count(*), count(distinct track_id) "
    "from recommendations.similar_tracks",
    "ml.model_runs champions": "select count(*), null from ml.model_runs where status = 'champion'",
    "staged leftovers": "select count(*), null from pg_tables where tablename like '%\\_\\_new'",
}


def fingerprint(url: ConnectionURL) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url.url()) as conn:
        return {name: tuple(conn.execute(q).fetchone() or ()) for name, q in FINGERPRINT.items()}


def audit_grants(conn: psycopg.Connection) -> list[str]:
    """What is wrong with the grants now (empty: all hold): a PII mart (`*_pii`) readable by
    anyone but mvx_pii_reader, a mart its readers cannot read, a published recommendations
    table the app cannot read, a CREATE privilege of the analyst."""

    def can(role: str, schema: str, table: str) -> bool:
        qualified = psycopg.sql.Identifier(schema, table).as_string(conn)
        row = conn.execute("select has_table_privilege(%s, %s, 'SELECT')", (role, qualified))
        return bool(row.fetchone()[0])  # type: ignore[index]

    relations = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('marts', 'marts_candidate', 'recommendations')"
        " and c.relkind in ('r', 'p', 'm') order by 1, 2"
    ).fetchall()
    problems: list[str] = []
    for schema, table in relations:
        if schema == "recommendations":
            if not table.endswith("__new") and not can(APP, schema, table):  # __new: staged
                problems.append(f"{APP} cannot read recommendations.{table}")
        elif table.endswith("_pii"):
            problems += [
                f"{role} can read the PII mart {schema}.{table}"
                for role in (ANALYST, ML, APP)
                if can(role, schema, table)
            ]
            if not can(PII_READER, schema, table):
                problems.append(f"{PII_READER} cannot read {schema}.{table}")
        else:
            problems += [
                f"{role} cannot read {schema}.{table}"
                for role in (ANALYST, ML)
                if not can(role, schema, table)
            ]
    rows = conn.execute(
        "select nspname from pg_namespace where has_schema_privilege(%s, oid, 'CREATE')"
        " order by nspname",
        (ANALYST,),
    ).fetchall()
    problems += [f"{ANALYST} may create in schema {row[0]}" for row in rows]
    row = conn.execute(
        "select has_database_privilege(%s, current_database(), 'CREATE')", (ANALYST,)
    ).fetchone()
    if row and row[0]:
        problems.append(f"{ANALYST} may create schemas in the database")
    return problems

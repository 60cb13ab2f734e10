"""The proof of "forget a user" (README.md, SECURITY.md): a user seeded across every store (raw's
versions and items, a quarantined record, the marts, the lists, an impression, the model
artifacts) is erased by `python -m privacy forget`, on both servers; the analyst may not do it;
the audit names what went, by which role, with no PII; two more days in which the API still
serves the user store nothing of them (ingestion drops them, counted, and the suppression check
passes); then every table, artifact and log is scanned for their id and e-mail: zero hits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ANALYST, APP, LOADER, PRIVACY
from moovitamix.settings import load_settings
from privacy import ErasureFailed
from privacy.erasure import process_requests
from tests.conftest import SimulatorFactory, create_warehouse, export_warehouse
from tests.e2e.daily_helpers import SIMULATOR_ARGS, daily_env, query, run_daily, set_simulator

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.pg_servers("embedded", "system"),
]
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def _day(env: dict[str, str], root: Path) -> None:
    result = run_daily(env, root)
    assert result.returncode == exit_codes.OK, result.stdout[-3000:] + result.stderr[-3000:]


def _privacy(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m privacy ...` (what `make forget-user` and `make erasure-report` run)."""
    return subprocess.run(
        [sys.executable, "-m", "privacy", *args], cwd=root, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip


def _pick_user(url: ConnectionURL) -> tuple[int, str]:
    """A listener in every store: current in raw, with listens, a list; not a track's id."""
    ((user_id, email),) = query(
        url,
        "select u.id, u.email from raw.users as u where u._dlt_valid_to is null"
        " and u.id in (select user_id from recommendations.user_top_tracks)"
        " and u.id not in (select id from raw.tracks)"
        " order by (select count(*) from marts.fct_listens as f where f.user_id = u.id) desc,"
        " u.id limit 1",
    )
    return int(user_id), email


def _as(url: ConnectionURL, role: str) -> psycopg.Connection:
    conn = psycopg.connect(url.url(), autocommit=True)
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    return conn


def _seed_rejected_and_impression(url: ConnectionURL, user_id: int, email: str) -> None:
    """What a broken page and the serving API would have stored: two quarantined records of the
    user (one keyed, one whose id was unreadable, found by its e-mail) and an impression."""
    with _as(url, LOADER) as conn:
        columns = {
            name: nullable == "YES"
            for name, nullable in conn.execute(
                "select column_name, is_nullable from information_schema.columns"
                " where table_schema = 'raw' and table_name = '_rejected'"
            )
        }
        (load_id,) = conn.execute("select max(load_id) from raw._dlt_loads").fetchone()  # type: ignore[misc]
        for key, payload in (
            (str(user_id), {"id": user_id, "email": email, "first_name": 7}),
            (None, {"id": "not-a-number", "email": email.upper()}),
        ):
            row = {
                "endpoint": "users", "page": 1, "record_key": key, "reason": "seeded",
                "payload": json.dumps(payload), "run_id": "seed", "_dlt_load_id": load_id,
                "_dlt_id": f"seed{len(str(key))}",
            }  # fmt: skip
            row = {k: v for k, v in row.items() if k in columns}
            statement = sql.SQL("insert into raw._rejected ({}, rejected_at) values ({}, now())")
            conn.execute(
                statement.format(
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )
    with _as(url, APP) as conn:
        conn.execute(
            "insert into monitoring.recommendation_impressions"
            " (user_id, model_run_id, source, route, k, track_ids)"
            " values (%s, null, 'model', 'GET /users/{user_id}/recommendations', 2, '{1,2}')",
            (user_id,),
        )


def _hits_in_tables(url: ConnectionURL, user_id: int, email: str) -> list[str]:
    """Every table of every schema: a user-id column (`user_id`, `id` of a users table,
    `record_key`) holding the id, or any text/JSON column holding the e-mail or the id as a
    JSON field."""
    hits = []
    needle_json = re.compile(rf'"(id|user_id)"\s*:\s*"?{user_id}\b')
    with psycopg.connect(url.url(), autocommit=True) as conn:
        columns = conn.execute(
            "select c.table_schema, c.table_name, c.column_name, c.data_type"
            " from information_schema.columns c join information_schema.tables t"
            " using (table_schema, table_name) where t.table_type in ('BASE TABLE', 'VIEW')"
            " and c.table_schema <> all(%s)",
            (list(SYSTEM_SCHEMAS),),
        ).fetchall()
        for schema, table, column, kind in columns:
            target = sql.Identifier(schema, table)
            col = sql.Identifier(column)
            if column in ("user_id", "record_key") or (column == "id" and "user" in table):
                statement = sql.SQL("select count(*) from {} where {}::text = %s").format(
                    target, col
                )
                if conn.execute(statement, (str(user_id),)).fetchone()[0]:  # type: ignore[index]
                    hits.append(f"{schema}.{table}.{column} = id")
            if kind in ("text", "character varying", "json", "jsonb", "ARRAY", "USER-DEFINED"):
                statement = sql.SQL("select {}::text from {} where {}::text ilike %s").format(
                    col, target, col
                )
                if conn.execute(statement, (f"%{email.strip()}%",)).fetchone():
                    hits.append(f"{schema}.{table}.{column} holds the e-mail")
                if kind in ("text", "json", "jsonb"):
                    statement = sql.SQL("select {}::text from {} where {}::text ~ %s").format(
                        col, target, col
                    )
                    if conn.execute(statement, (needle_json.pattern,)).fetchone():
                        hits.append(f"{schema}.{table}.{column} holds the id as a field")
    return hits


def _hits_in_files(folders: list[Path], user_id: int, email: str) -> list[str]:
    """Logs, reports, dbt's and GX's output, dlt's working dir: the e-mail anywhere, the id as
    a whole word; every artifact's id map: the id."""
    hits = []
    word = re.compile(rf"(?<![\w.-]){user_id}(?![\w])")
    for folder in folders:
        for path in folder.rglob("*") if folder.exists() else ():
            if not path.is_file():
                continue
            if path.name == "id_maps.npz":
                with np.load(path, allow_pickle=False) as maps:
                    if user_id in maps["user_ids"]:
                        hits.append(f"{path}: the id map")
                continue
            if path.suffix in (".npz", ".parquet", ".png", ".woff", ".woff2", ".ico"):
                continue
            text = path.read_bytes().decode(errors="replace")
            if email.strip().lower() in text.lower():
                hits.append(f"{path}: the e-mail")
            if path.suffix in (".jsonl", ".log") and word.search(text):
                hits.append(f"{path}: the id")
    return hits


def test_a_forgotten_user_is_nowhere_after_two_more_days_of_the_api_serving_them(
    pg_admin_url: ConnectionURL,
    start_simulator: SimulatorFactory,
    project_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = create_warehouse(pg_admin_url, prefix="mvx_forget")
    export_warehouse(url, monkeypatch, tmp_path)
    api = start_simulator(*SIMULATOR_ARGS)
    env = daily_env(api)
    _day(env, project_copy)
    user_id, email = _pick_user(url)
    _seed_rejected_and_impression(url, user_id, email)
    artifacts = Path(env["MOOVITAMIX_DATA_DIR"]) / "artifacts"
    assert any(
        user_id in np.load(p, allow_pickle=False)["user_ids"]
        for p in artifacts.rglob("id_maps.npz")
    ), "the champion's artifact knows the user"

    # the analyst may neither ask for nor run an erasure
    with _as(url, ANALYST) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("insert into monitoring.erasure_requests (user_id) values (%s)", (user_id,))
    with _as(url, PRIVACY) as conn:
        conn.execute(
            "insert into monitoring.erasure_requests (user_id, reason) values (%s, 'by sql')",
            (user_id,),
        )
    with pytest.raises(ErasureFailed, match="mvx_analyst may not erase"):
        process_requests(url, load_settings(), role=ANALYST)
    assert query(url, "select count(*) from privacy.suppressions") == [(0,)]

    # the operator's make target: the row inserted by SQL and this one are both done
    result = _privacy(
        env, project_copy, "forget", "--user-id", str(user_id), "--reason", "ticket-987"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = _privacy(env, project_copy, "process")
    assert result.returncode == 0, result.stderr[-3000:]
    audit = query(
        url,
        "select request_id, status, subject_hash, removed_by_store, erased_by, reason, finished_at"
        " from monitoring.erasure_audit order by request_id",
    )
    assert [row[1] for row in audit] == ["done", "done"]
    by_sql, first = audit  # the ticket's request ran first (forget runs its own at once)
    assert first[5] == "ticket-987" and by_sql[5] == "by sql"
    assert first[2] == by_sql[2] and len(first[2]) == 64, "one subject, hashed"
    removed = first[3]
    for store in (
        "raw.users", "raw.listen_history", "raw.listen_history__items", "marts.dim_users",
        "marts.dim_users_pii", "marts.dim_users_history", "marts.fct_listens",
        "recommendations.user_top_tracks", "monitoring.recommendation_impressions",
        "artifacts (model files)",
    ):  # fmt: skip
        assert removed.get(store, 0) >= 1, (store, removed)
    assert removed["raw._rejected"] == 2, removed
    assert sum(by_sql[3].values()) == 0, "the request run second found nothing left"
    assert first[4] == PRIVACY
    assert str(user_id) not in json.dumps([list(map(str, row)) for row in audit])
    assert email.lower() not in json.dumps([list(map(str, row)) for row in audit]).lower()
    report = _privacy(env, project_copy, "report")
    assert report.returncode == 0 and "raw._rejected: 2" in report.stdout, report.stdout
    assert str(user_id) not in report.stdout and email.lower() not in report.stdout.lower()

    # two more days, the API still serving the user: dropped on ingestion, counted
    for day in (1, 2):
        set_simulator(api, day=day)
        _day(env, project_copy)
    suppressed = dict(
        query(
            url,
            "select endpoint, sum(suppressed) from monitoring.ingestion_stats"
            " where status = 'loaded' group by endpoint",
        )
    )
    assert suppressed["users"] >= 1 and suppressed["listen_history"] >= 1, suppressed
    assert suppressed["tracks"] == 0
    (check,) = query(
        url,
        "select count(*) filter (where success), count(*) from monitoring.validation_results"
        " where suite = 'privacy.suppressed'",
    ) or [(0, 0)]
    assert check[1] >= 2 and check[0] == check[1], check

    assert _hits_in_tables(url, user_id, email) == []
    folders = [
        Path(env["MOOVITAMIX_LOGS_DIR"]),
        Path(env["MOOVITAMIX_DATA_DIR"]) / "dlt",
        artifacts,
        project_copy / "reports",
        project_copy / "dbt_project" / "logs",
        project_copy / "dbt_project" / "target",
        project_copy / "expectations" / "gx" / "uncommitted",
    ]
    assert _hits_in_files(folders, user_id, email) == []

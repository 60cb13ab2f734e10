"""`make daily` end to end: real subprocesses, the simulator over HTTP, on the embedded Postgres
and on the distribution's own server (`pg_server`: tests/conftest.py).

Write-audit-publish (moovitamix/publication.py): each day becomes visible to readers only when
all of it passed; a failed or killed run leaves the last good day in place; the next normal run
ends in the same state as a clean run of that day.
"""

from __future__ import annotations

import json
from pathlib import Path

import dlt
import psycopg
import pytest

from ml.registry import ensure_model_runs
from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.logins import PROJECT_LOGINS
from moovitamix.roles import ANALYST, ML, ensure_roles
from tests.conftest import SimulatorFactory, Webhook
from tests.e2e.conftest import SECRET, CleanRun
from tests.e2e.daily_helpers import (
    SIMULATOR_ARGS,
    audit_grants,
    daily_env,
    fingerprint,
    kill_hard,
    published_by,
    query,
    run_daily,
    runs,
    scalar,
    set_simulator,
    simulator_totals,
    start_daily,
    step_started,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BOTH_SERVERS = pytest.mark.pg_servers("embedded", "system")


def _run_id(output: str) -> str:
    """From the run's first line: "MooVitamix daily run <run_id>: using ..."."""
    first = next(line for line in output.splitlines() if line.startswith("MooVitamix daily run"))
    return first.split("daily run ", 1)[1].split(":", 1)[0]


def _assert_day_published(url: ConnectionURL, api_url: str, run_id: str) -> None:
    totals = simulator_totals(api_url)
    assert published_by(url) == run_id
    assert scalar(url, "select count(*) from marts.dim_users") == totals["users"]
    assert scalar(url, "select count(*) from marts.dim_tracks") == totals["tracks"]
    served = scalar(url, "select count(distinct user_id) from recommendations.user_top_tracks")
    assert served == totals["users"]
    (recs_run,) = query(
        url,
        "select distinct m.run_id from recommendations.user_top_tracks as r "
        "join ml.model_runs as m using (model_run_id)",
    )
    assert recs_run == (run_id,), "the lists in place are this run's"
    staged = scalar(url, "select count(*) from pg_tables where tablename like '%\\_\\_new'")
    assert staged == 0


@BOTH_SERVERS
def test_cron_environment_runs_make_daily(clean_day0: CleanRun) -> None:
    out = clean_day0.result.stdout
    assert "using the built-in simulator at http://127.0.0.1:" in out.splitlines()[0]
    assert " OK after " in out
    for step in ("ingest", "transform", "validate", "train", "audit_recs", "publish", "report"):
        assert f"  {step} " in out, f"summary has no line for {step}"
    run_id = _run_id(out)
    assert published_by(clean_day0.warehouse) == run_id
    log_file = clean_day0.logs_dir / f"{run_id}.jsonl"
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {entry["run_id"] for entry in entries} == {run_id}, "one JSON object per line"
    assert any("published run" in entry["msg"] for entry in entries)


@BOTH_SERVERS
def test_the_grants_hold_after_a_daily_rebuild(clean_day0: CleanRun) -> None:
    """As the run's own login (on the second server no superuser): the analyst reads the
    marts, but neither raw nor the PII mart."""
    with psycopg.connect(clean_day0.warehouse.url()) as conn:
        assert audit_grants(conn) == []
        conn.execute(f"set role {ANALYST}")
        assert conn.execute("select count(*) from marts.dim_users").fetchone() != (0,)
        for table in ("marts.dim_users_pii", "raw.users"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select count(*) from {table}")
            conn.rollback()
            conn.execute(f"set role {ANALYST}")


@BOTH_SERVERS
def test_the_password_is_nowhere(clean_day0: CleanRun) -> None:
    """Console, run logs, dlt's state, and every folder the run writes in its project root: no
    bootstrap password, nor any of the project logins' (outside their credentials file)."""
    credentials = clean_day0.home / ".config" / "moovitamix" / "credentials.pgpass"
    passwords = [line.rsplit(":", 1)[1] for line in credentials.read_text().splitlines()]
    assert len(passwords) == len(PROJECT_LOGINS)
    secrets = [SECRET.encode(), *(password.encode() for password in passwords)]
    output = clean_day0.result.stdout + clean_day0.result.stderr
    assert not any(secret.decode() in output for secret in secrets)
    folders = [
        clean_day0.home,  # logs/ and the data dir (dlt's pipelines and state, .dlt)
        clean_day0.root / "dbt_project" / "target",
        clean_day0.root / "dbt_project" / "logs",
        clean_day0.root / "expectations",
        clean_day0.root / "reports",
        clean_day0.root / "artifacts",
    ]
    leaks = [
        path
        for folder in folders
        if folder.exists()
        for path in folder.rglob("*")
        if path.is_file()
        and path != credentials
        and any(secret in path.read_bytes() for secret in secrets)
    ]
    assert leaks == []


@BOTH_SERVERS
def test_three_days_a_concurrent_start_then_a_broken_day(
    warehouse_env: ConnectionURL,
    start_simulator: SimulatorFactory,
    webhook: Webhook,
    tmp_path: Path,
    project_copy: Path,
) -> None:
    api = start_simulator(*SIMULATOR_ARGS)
    env = daily_env(api, {"ALERT_WEBHOOK_URL": webhook.url})
    # day 0: two runs started at once; one runs, the other exits at once with the lock code
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    both = [start_daily(env, log, project_copy) for log in logs]
    codes = [process.wait(timeout=600) for process in both]
    outputs = [log.read_text() for log in logs]
    assert sorted(codes) == [exit_codes.OK, exit_codes.ALREADY_RUNNING], outputs
    refused = outputs[codes.index(exit_codes.ALREADY_RUNNING)]
    assert "not started: another run is in progress" in refused
    winner = outputs[codes.index(exit_codes.OK)]
    _assert_day_published(warehouse_env, api, _run_id(winner))

    before = fingerprint(warehouse_env)
    for day in (1, 2):
        set_simulator(api, day=day)
        result = run_daily(env, project_copy)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _assert_day_published(warehouse_env, api, _run_id(result.stdout))
        after = fingerprint(warehouse_env)
        assert after["marts.dim_users"] != before["marts.dim_users"], f"day {day} is visible"
        assert after["marts.fct_listens"] != before["marts.fct_listens"]
        before = after
        # yesterday's marts are the next candidate (so fct_listens stays incremental)
        comment = scalar(
            warehouse_env, "select obj_description('marts_candidate'::regnamespace, 'pg_namespace')"
        )
        assert comment.startswith("published by run "), comment
    assert [status for _, status, _ in runs(warehouse_env)] == ["success"] * 3
    day2_run = published_by(warehouse_env)
    # each transform recorded the newest load it checked each element of: the next one's start
    checked = query(
        warehouse_env,
        "select details ->> 'elements_checked_through' from monitoring.pipeline_run_steps"
        " where step = 'transform' order by started_at",
    )
    loads = query(
        warehouse_env,
        "select load_id from raw._dlt_loads where status = 0 order by cast(load_id as numeric)",
    )
    assert checked == loads[-3:], (checked, loads)

    # day 3 is broken: the API stops serving half of the users
    set_simulator(api, day=3, faults=["users:missing_records=0.5"])
    webhook.bodies.clear()
    broken = run_daily(env, project_copy)
    assert broken.returncode == exit_codes.STEP_FAILED
    assert "FAILED in step 'validate'" in broken.stderr
    assert "marts.day_over_day.volume_drop" in broken.stderr
    assert "nothing published" in broken.stderr
    titles = [body["text"] for body in webhook.bodies]
    assert any("volume drop" in t and "marts.day_over_day" in t for t in titles), titles
    assert any("daily run failed in step validate" in t for t in titles), titles
    # analysts and the app still read day 2, whole
    after = fingerprint(warehouse_env)
    published = {k: v for k, v in after.items() if not k.startswith("raw")}
    assert published == {k: v for k, v in before.items() if not k.startswith("raw")}
    assert published_by(warehouse_env) == day2_run

    # the API recovers: the next run rebuilds the candidate the broken run left, and publishes
    set_simulator(api, faults=[])
    result = run_daily(env, project_copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_day_published(warehouse_env, api, _run_id(result.stdout))
    statuses = [status for _, status, _ in runs(warehouse_env)]
    assert statuses == ["success"] * 3 + ["failed", "success"], "the refused run left no trace"


# The kills test the pipeline, not the server: the embedded one only (CI time).
def test_kill_during_ingestion_then_a_normal_run_equals_a_clean_run(
    warehouse_env: ConnectionURL,
    start_simulator: SimulatorFactory,
    clean_day0: CleanRun,
    tmp_path: Path,
    project_copy: Path,
) -> None:
    api = start_simulator(*SIMULATOR_ARGS, extra=["--fault", "*:latency=1.0,latency_ms=1500"])
    env = daily_env(api)
    killed = start_daily(env, tmp_path / "killed.log", project_copy)
    wait_for(lambda: step_started(warehouse_env, "ingest"), "the ingest step")
    # killed while the extract is under way (each page takes 1.5 s)
    packages = Path(env["MOOVITAMIX_DATA_DIR"]).glob
    wait_for(lambda: any(packages("dlt/*/moovitamix/normalize/**/new_jobs")), "the extract")
    assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    kill_hard(killed)
    assert scalar(warehouse_env, "select to_regclass('raw.users')") is None, "nothing loaded"

    set_simulator(api, faults=[])
    result = run_daily(env, project_copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ended without finishing (killed?)" in result.stderr
    assert [status for _, status, _ in runs(warehouse_env)] == ["failed", "success"]
    # what the killed run extracted was not loaded, and nothing is left pending in dlt's pipeline
    (working_dir,) = packages("dlt/*/moovitamix")
    pipeline = dlt.attach("moovitamix", pipelines_dir=str(working_dir.parent))
    assert not pipeline.has_pending_data and not pipeline.list_normalized_load_packages()
    assert fingerprint(warehouse_env) == clean_day0.fingerprint


# The kills test the pipeline, not the server: the embedded one only (CI time).
def test_kill_during_publish_then_a_normal_run_equals_a_clean_run(
    warehouse_env: ConnectionURL,
    start_simulator: SimulatorFactory,
    clean_day0: CleanRun,
    tmp_path: Path,
    project_copy: Path,
) -> None:
    api = start_simulator(*SIMULATOR_ARGS)
    env = daily_env(api)
    # Hold ml.model_runs so that the publish transaction stops at its insert: after it renamed
    # the schemas and before it commits. Reads (the champion lookup) still pass.
    ensure_roles(warehouse_env)
    with psycopg.connect(warehouse_env.url()) as blocker:
        blocker.execute(f"set role {ML}")  # as the ML step creates it: nothing to hand over
        ensure_model_runs(blocker)
        blocker.commit()
        blocker.execute("lock table ml.model_runs in exclusive mode")
        killed = start_daily(env, tmp_path / "killed.log", project_copy)

        def publishing() -> bool:
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            return bool(
                scalar(
                    warehouse_env,
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and query ilike 'insert into ml.model_runs%%'",
                )
            )

        wait_for(publishing, "the publish transaction to reach ml.model_runs")
        kill_hard(killed)
        blocker.rollback()
    wait_for(
        lambda: (
            not scalar(
                warehouse_env,
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and pid <> pg_backend_pid() and backend_type = 'client backend'",
            )
        ),
        "the killed run's connections to end",
        timeout_s=60,
    )
    # nothing of the killed run is visible: the marts readers see are still empty
    assert scalar(warehouse_env, "select to_regclass('marts.dim_users')") is None
    assert scalar(warehouse_env, "select to_regclass('recommendations.user_top_tracks')") is None
    assert scalar(warehouse_env, "select count(*) from ml.model_runs") == 0

    result = run_daily(env, project_copy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [status for _, status, _ in runs(warehouse_env)] == ["failed", "success"]
    (details,) = query(
        warehouse_env,
        "select details from monitoring.pipeline_run_steps where step = 'transform' "
        "and run_id = %s",
        (_run_id(result.stdout),),
    )
    assert details[0]["full_refresh"] is True, "an unpublished candidate is rebuilt in full"
    assert fingerprint(warehouse_env) == clean_day0.fingerprint

"""Validation as a step of the daily run and as a command: an error expectation fails the step
(and the run, in the ledger), a warning only alerts; alerts reach a real webhook; a webhook that
is down fails nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from expectations import step as monitoring
from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from orchestrator import daily
from tests.conftest import Webhook
from tests.expectations.conftest import Execute
from tests.expectations.seed import seed_clean

pytestmark = pytest.mark.integration

RUN = "20261126T100000Z-dddddd"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def daily_env(
    warehouse_env: ConnectionURL,
    gx_dir: Path,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> ConnectionURL:
    """A seeded warehouse as WAREHOUSE_URL, alerts to the webhook, GX on the test's copy."""
    seed_clean(warehouse_env, RUN)
    with psycopg.connect(warehouse_env.url()) as conn:  # the orchestrator opens its own run
        conn.execute("delete from monitoring.pipeline_runs")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:9")  # no source step here
    monkeypatch.setattr("expectations.context.GX_DIR", gx_dir)
    monkeypatch.setattr("expectations.validate.GX_DIR", gx_dir)
    return warehouse_env


def _run_daily(step: daily.Step) -> int:
    """The run with the test's temp dir (warehouse_env's data dir's parent) as its project root:
    the closing report step writes reports/health.html there, not in the repo."""
    root = Path(os.environ["MOOVITAMIX_DATA_DIR"]).parent
    return daily.run(load_settings(root=root), RUN, steps=(("validate", step),))


def _ledger(url: ConnectionURL) -> tuple[tuple[object, ...], tuple[object, ...]]:
    with psycopg.connect(url.url()) as conn:
        run = conn.execute(
            "select status, failed_step, error_message from monitoring.pipeline_runs"
        ).fetchone()
        step = conn.execute(
            "select step, status, rows_out, error_message from monitoring.pipeline_run_steps"
        ).fetchone()
    assert run and step
    return run, step


def test_error_expectation_fails_the_step_and_the_run(
    daily_env: ConnectionURL, webhook: Webhook, sql: Execute
) -> None:
    sql("update raw.users set _dlt_valid_to = now() where id <= 3")
    assert _run_daily(monitoring.validate_data) == exit_codes.STEP_FAILED
    (status, failed_step, error), (_, step_status, _, _) = _ledger(daily_env)
    assert (status, failed_step, step_status) == ("failed", "validate", "failed")
    assert "raw.ingestion.row_count_matches_api_total" in str(error)
    severities = [(b["severity"], b["step"]) for b in webhook.bodies]
    # the expectation's alert, then the orchestrator's failed-run alert
    assert severities == [("error", "validate"), ("error", "validate")]
    expectation_alert = webhook.bodies[0]
    assert "raw row count" in expectation_alert["text"]
    assert expectation_alert["details"]["expectation"] == "row_count_matches_api_total"
    assert expectation_alert["details"]["threshold"] == "<= 0"
    assert expectation_alert["run_id"] == RUN


def test_a_failing_runs_alerts_carry_counts_not_the_users_names_or_e_mails(
    daily_env: ConnectionURL, webhook: Webhook, sql: Execute
) -> None:
    """The validate step reads the users' records; the run fails there (an error expectation)
    while 5 of the current e-mails break their format. What reaches the webhook names the step
    and the counts, and no user's name or e-mail, broken or not."""
    sql(
        "update raw.users set first_name = 'Philomena' || id, last_name = 'Quackenbush' || id,"
        " email = 'philomena.quackenbush' || id || '@example.net'"
    )
    sql(
        "update raw.users set email = 'Philomena Quackenbush ' || id || ' at example dot net'"
        " where id between 10 and 14"
    )
    sql("update raw.users set _dlt_valid_to = now() where id <= 3")  # the error: 3 rows gone
    with psycopg.connect(daily_env.url()) as conn:
        seeded = conn.execute(
            "select distinct unnest(array[email, first_name, last_name]) from raw.users"
        ).fetchall()
    assert len(seeded) >= 3 * 200  # every version's name and e-mail, the broken ones included
    assert _run_daily(monitoring.validate_data) == exit_codes.STEP_FAILED
    assert webhook.bodies, "the failing run alerted"
    posted = json.dumps(webhook.bodies).lower()
    leaked = sorted(value for (value,) in seeded if value and value.lower() in posted)
    assert not leaked, f"record contents in the alerts: {leaked[:5]}"
    assert "quackenbush" not in posted and "philomena" not in posted
    # ...and they say where and how much
    assert {b["step"] for b in webhook.bodies} == {"validate"}
    assert any(b["details"].get("expectation") == "row_count_matches_api_total"
               for b in webhook.bodies)  # fmt: skip
    (email_alert,) = [b for b in webhook.bodies if "email" in str(b["details"].get("expectation"))]
    assert "5 of 197 break it" in email_alert["text"]
    assert any("daily run failed in step validate" in b["text"] for b in webhook.bodies)


def test_warning_expectation_only_alerts(
    daily_env: ConnectionURL, webhook: Webhook, sql: Execute
) -> None:
    sql("update raw.users set email = 'nobody' where id = 3")
    assert _run_daily(monitoring.validate_data) == exit_codes.OK
    (status, _, _), (_, step_status, rows_out, _) = _ledger(daily_env)
    assert (status, step_status) == ("success", "success")
    assert rows_out == 14  # the data stage's expectations
    (body,) = webhook.bodies
    assert body["severity"] == "warning" and body["details"]["suite"] == "raw.users"
    assert body["text"].startswith(":warning: MooVitamix warning [validate]")


def test_a_webhook_that_is_down_fails_nothing(
    daily_env: ConnectionURL, webhook: Webhook, sql: Execute, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("time.sleep", lambda _: None)  # the webhook's backoff
    webhook.status = 503
    sql("update raw.users set email = 'nobody' where id = 3")
    assert _run_daily(monitoring.validate_data) == exit_codes.OK
    assert len(webhook.bodies) == 3  # tried, retried, given up


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expectations", *args],
        cwd="/", capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip


def test_cli_validate_exits_1_on_an_error_and_prints_the_failures(
    warehouse_env: ConnectionURL, sql: Execute, gx_dir: Path
) -> None:
    seed_clean(warehouse_env, RUN)
    sql("update raw.users set _dlt_valid_to = now() where id <= 3")
    env = {"MOOVITAMIX_RUN_ID": RUN}
    args = ("validate", "--gx-dir", str(gx_dir), "--suite", "raw.ingestion")
    result = _cli(*args, env=env)
    assert result.returncode == exit_codes.STEP_FAILED, result.stderr
    assert "ERROR   raw.ingestion.row_count_matches_api_total: 3 (users)" in result.stdout
    assert "Traceback" not in result.stderr
    docs = _cli("docs", "--gx-dir", str(gx_dir), env=env)
    assert docs.returncode == 0 and docs.stdout.strip().endswith("local_site/index.html")

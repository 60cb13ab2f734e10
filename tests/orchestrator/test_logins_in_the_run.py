"""The daily run's steps each log in as their own login (SECURITY.md, "Logins"): what
pg_stat_activity shows while each step runs is project logins only, none a superuser; and once
set up, a run needs no bootstrap password (on the server that checks passwords, the
distribution's, the URL's password is removed before the run)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.logins import PROJECT_LOGINS, open_logins
from moovitamix.settings import load_settings
from moovitamix.step import RunContext, StepReport
from orchestrator.daily import run
from orchestrator.steps import STEP_ROLES
from tests.conftest import create_warehouse, export_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.pg_servers("embedded", "system")]

STEPS = ("ingest", "transform", "validate", "train", "audit_recs", "publish")
Seen = dict[str, tuple[str, str, list[tuple[str, bool]]]]


def _probe(name: str, seen: Seen) -> object:
    """A step that records who its session is and who is connected to the warehouse."""

    def step(ctx: RunContext) -> StepReport:
        with psycopg.connect(ctx.warehouse.url()) as conn:
            row = conn.execute("select session_user::text, current_user::text").fetchone()
            assert row is not None
            activity = conn.execute(
                "select distinct a.usename::text, u.usesuper from pg_stat_activity a "
                "join pg_user u on u.usesysid = a.usesysid "
                "where a.datname = current_database() order by 1"
            ).fetchall()
        seen[name] = (row[0], row[1], activity)
        return StepReport(f"{name} probed")

    return step


def test_each_step_logs_in_as_itself_and_a_run_needs_no_bootstrap_password(
    pg_server: str,
    pg_admin_url: ConnectionURL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = create_warehouse(pg_admin_url, prefix="mvx_logins_run")
    export_warehouse(url, monkeypatch, tmp_path)
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:1")  # no step asks it
    open_logins(load_settings())  # the set-up, with the bootstrap password
    if pg_server == "system":  # the embedded server trusts its private socket: nothing to remove
        monkeypatch.setenv("WAREHOUSE_URL", replace(url, password="").url())

    seen: Seen = {}
    steps = tuple((name, _probe(name, seen)) for name in STEPS)
    code = run(load_settings(), "run-logins", steps, (("report", _probe("report", seen)),))

    assert code == exit_codes.OK, capsys.readouterr().err
    assert set(seen) == {*STEPS, "report"}
    logins = set(PROJECT_LOGINS.values())
    for name, (session_user, current_user, activity) in seen.items():
        role = STEP_ROLES[name]
        assert (session_user, current_user) == (PROJECT_LOGINS[role], role), name
        assert activity and all(user in logins and not su for user, su in activity), activity
    with psycopg.connect(url.url()) as conn:
        ledger = conn.execute("select status from monitoring.pipeline_runs").fetchall()
    assert ledger == [("success",)], "the run recorded itself as the publisher"
    if pg_server == "system":
        assert "set-up skipped" in caplog.text

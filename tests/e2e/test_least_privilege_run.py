"""A real day of `make daily` (cron's environment) on its logins (SECURITY.md, "Logins"): while
it runs, pg_stat_activity shows only the project's logins on the warehouse, none a superuser,
but for the set-up's sessions at its start (named so); and on the server that checks passwords
the day runs with the bootstrap user's password removed from the environment once set up."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.logins import PROJECT_LOGINS, open_logins
from moovitamix.roles import LOADER, ML, TRANSFORMER
from moovitamix.settings import load_settings
from moovitamix.warehouse import SETUP_APPLICATION
from tests.e2e.conftest import _cron_warehouse
from tests.e2e.daily_helpers import cron_daily

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.pg_servers("embedded", "system"),
]


class ActivitySampler(threading.Thread):
    """Who is connected to the warehouse's database, sampled until stopped: (login, superuser,
    application) of every client backend but its own."""

    def __init__(self, url: ConnectionURL) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: set[tuple[str, bool, str]] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url.url(), autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "select a.usename::text, u.usesuper, a.application_name::text "
                    "from pg_stat_activity a "
                    "join pg_user u on u.usesysid = a.usesysid "
                    "where a.datname = current_database() and a.pid <> pg_backend_pid() "
                    "and a.backend_type = 'client backend'"
                ).fetchall()
                self.seen.update(rows)
                self.stop.wait(0.05)  # a poll interval, not a wait for an event


def test_a_day_runs_on_its_logins_and_needs_no_bootstrap_password(
    pg_server: str,
    pg_admin_url: ConnectionURL,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    project_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warehouse, extra_env = _cron_warehouse(pg_server, pg_admin_url, request)
    home = tmp_path_factory.mktemp("cron-home")
    # the set-up, with the bootstrap password: roles, schemas, logins, the credentials file in
    # the default place of the cron user's home
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(home / "data"))
    monkeypatch.setenv(
        "MOOVITAMIX_CREDENTIALS_FILE", str(home / ".config" / "moovitamix" / "credentials.pgpass")
    )
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)
    open_logins(load_settings())
    day = replace(warehouse, password="") if pg_server == "system" else warehouse

    sampler = ActivitySampler(pg_admin_url.with_database(warehouse.database))
    sampler.start()
    try:
        result = cron_daily(project_copy, home, day, extra_env)
    finally:
        sampler.stop.set()
        sampler.join()

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if pg_server == "system":
        assert "set-up skipped" in result.stderr
    steps = {(login, su) for login, su, app in sampler.seen if app != SETUP_APPLICATION}
    logins = {login for login, _ in steps}
    assert all(not superuser for _, superuser in steps), steps
    assert logins <= set(PROJECT_LOGINS.values()), logins
    # the steps that last (the publisher's sessions are too short to be sampled for sure)
    assert {PROJECT_LOGINS[r] for r in (LOADER, TRANSFORMER, ML)} <= logins, logins

"""Faults are visible: a daily run (ingest, then the health report) against a simulator that
answers some requests 5xx or 429 loads everything, counts each retry by cause in
monitoring.ingestion_stats, and the report shows those same counts in its failed and retried
requests table and in its request plot."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from expectations import step as monitoring
from expectations.report.data import ReportData, load_report_data
from expectations.report.plots import png, request_health
from ingestion.step import ingest
from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from orchestrator import daily
from tests.conftest import SimulatorFactory

pytestmark = pytest.mark.integration

RUN = "20261126T020000Z-fa017e"
# Every request of every endpoint may meet a 5xx or a 429 (retried after 0.1 s); the seed makes
# the faults the same on every run, and leaves each page a good answer within the attempts.
FAULTS = "*:http_5xx=0.2,http_429=0.2,retry_after_s=0.1"
SIMULATOR = ("--seed", "11", "--users", "300", "--tracks", "200", "--fault", FAULTS)


def _stats(url: ConnectionURL) -> dict[str, tuple[str, int, dict[str, int], dict[str, int]]]:
    with psycopg.connect(url.url()) as conn:
        rows = conn.execute(
            "select endpoint, status, requests, retries, http_errors "
            "from monitoring.ingestion_stats where run_id = %s",
            (RUN,),
        ).fetchall()
    return {endpoint: (status, n, retries, errors) for endpoint, status, n, retries, errors in rows}


def _retried_table(page: str) -> str:
    last_run = page.split("<h2>Last run</h2>", 1)[1].split("<h2>", 1)[0]
    return last_run.split("<h3>Failed and retried requests</h3>", 1)[1]


def _cells(table: str, endpoint: str) -> list[str]:
    row = re.search(rf"<tr><td>{endpoint}</td>(.*?)</tr>", table)
    assert row, f"no row for {endpoint} in {table}"
    return re.findall(r"<td[^>]*>(.*?)</td>", row[1])


def _without_retries(data: ReportData) -> ReportData:
    quiet = data.ingestion.assign(
        retries=[{}] * len(data.ingestion), http_errors=[{}] * len(data.ingestion)
    )
    return ReportData(data.runs, data.steps, quiet, data.validation)


def test_retries_show_in_the_ledger_and_the_report(
    warehouse_env: ConnectionURL,
    start_simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MOOVITAMIX_API_URL", start_simulator(*SIMULATOR))
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    settings = load_settings(root=tmp_path)  # the report goes to tmp_path/reports/
    code = daily.run(
        settings, RUN, steps=(("ingest", ingest),), closing=(("report", monitoring.health_report),)
    )
    assert code == exit_codes.OK

    stats = _stats(warehouse_env)
    assert set(stats) == {"users", "tracks", "listen_history"}
    causes: Counter[str] = Counter()
    for status, _, retries, errors in stats.values():
        assert status == "loaded"
        causes.update(retries)
        # every HTTP error answer was retried: 429s as such, 5xx under one cause
        assert sum(errors.values()) == sum(retries.values())
    assert (
        causes["http_5xx"] > 0
        and causes["http_429"] > 0
        and set(causes)
        <= {
            "http_5xx",
            "http_429",
        }
    )

    page = (tmp_path / "reports" / "health.html").read_text(encoding="utf-8")
    table = _retried_table(page)
    for endpoint, (_, requests, retries, errors) in stats.items():
        if not retries:
            continue
        _, requests_cell, errors_cell, retries_cell, _ = _cells(table, endpoint)
        assert requests_cell == str(requests)
        for cause, count in retries.items():
            assert f"{cause}: {count}" in retries_cell
        for http_status, count in errors.items():
            assert f"{http_status}: {count}" in errors_cell

    data = load_report_data(warehouse_env)
    assert list(data.runs["status"]) == ["success"]
    # drawn in the plot
    assert png(request_health(data)) != png(request_health(_without_retries(data)))

"""The health report: from a ledger of several runs (the last one failed, its report step still
running) it draws every plot, one tick per day or run, and lists the last run's failures; from
the uptake mart, the uptake per day and a table per model run; it is one self-contained file,
which headless Chromium renders without a single network request; it renders on an empty
warehouse too, and says why it shows no uptake."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from expectations import step as monitoring
from expectations.report import write_health_report
from expectations.report.data import ReportData, load_report_data
from expectations.report.plots import PLOTS, png, records_per_endpoint, request_health
from expectations.report.uptake import NOTE, per_day
from expectations.results import CheckResult, write_results
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_ledger import RunLedger
from moovitamix.settings import load_settings
from moovitamix.step import RunContext
from tests.expectations import chromium
from tests.expectations.seed import ingestion_stats

pytestmark = pytest.mark.integration

STEPS = (("ingest", 40.0), ("transform", 25.0), ("validate", 6.0), ("train", 30.0))
TOTALS = {"tracks": 2000, "users": 5000, "listen_history": 5000}
SCREEN = (1280, 2400)  # the screenshot's size: the whole report at this width
IMAGE = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
DAY = timedelta(days=1)
UPTAKE_DDL = """
create table marts.fct_recommendation_uptake (
    user_id bigint, listen_date date, model_run_id text, new_tracks integer,
    hits_published integer, hits_served integer, baseline_hits integer
)"""
# (days ago, model run, user, new tracks, hits in the published, served and popular lists)
UPTAKE = (
    (4, "model-a", 1, 10, 2, 1, 1),
    (4, "model-a", 2, 30, 10, 7, 1),  # 30%, 20%, 5% (not the mean of the users' shares)
    (3, "model-a", 1, 5, 1, 1, 1),  # 20%, 20%, 20%
    (2, "model-b", 2, 8, 4, 2, 1),  # 50%, 25%, 12.5%
)
UPTAKE_PER_DAY = {"published lists": [0.3, 0.2, 0.5], "served lists": [0.2, 0.2, 0.25],
                  "popular tracks": [0.05, 0.2, 0.125]}  # fmt: skip
UPTAKE_PER_RUN = [  # model-a: 13, 9 and 3 of 45 new tracks; model-b: 4, 2 and 1 of 8
    ["model-a", 45, "28.89%", "20.00%", "6.67%"], ["model-b", 8, "50.00%", "25.00%", "12.50%"],
]  # fmt: skip


def _run(url: ConnectionURL, run_id: str, started: datetime, *, fail_at: str | None) -> None:
    ledger = RunLedger(url, run_id)
    ledger.ensure_tables()
    ledger.start_run(source="test", warehouse="test")
    for step, seconds in STEPS:
        ledger.start_step(step)
        error = "2 error expectation(s) failed" if step == fail_at else None
        ledger.finish_step(step, seconds=seconds, rows_out=100, error=error)
        if error:
            break
    ledger.finish_run(
        failed_step=fail_at, error="2 error expectation(s) failed" if fail_at else None
    )
    ledger.start_step("report")  # as in the daily run: the report is written during its step
    with psycopg.connect(url.url()) as conn:
        conn.execute(
            "update monitoring.pipeline_runs set started_at = %s where run_id = %s",
            (started, run_id),
        )
        conn.execute(
            "update monitoring.pipeline_run_steps set started_at = %s where run_id = %s",
            (started, run_id),
        )


def _checks(run_id: str, *, failing: bool) -> list[CheckResult]:
    def check(name: str, severity: str, success: bool) -> CheckResult:
        return CheckResult(
            run_id, "raw.ingestion", name, severity, success, "3 (users)", "<= 0",
            "expect_metric_within_limit", name,
        )  # fmt: skip

    return [
        check("row_count_matches_api_total", "error", not failing),
        check("rejected_share", "warning", True),
        check("retry_storm", "warning", not failing),
    ]


def seed_uptake(conn: psycopg.Connection, rows: tuple[tuple[object, ...], ...] = UPTAKE) -> None:
    """The serving work's uptake mart, with the columns it is built with."""
    conn.execute(UPTAKE_DDL)
    today = datetime.now(UTC).date()
    conn.cursor().executemany(
        "insert into marts.fct_recommendation_uptake values (%s, %s, %s, %s, %s, %s, %s)",
        [(user, today - timedelta(days=ago), run, *counts) for ago, run, user, *counts in rows],
    )


def seed_ledger(url: ConnectionURL) -> None:
    """Five daily runs; the last one failed in validate after a retry storm. Uptake of two model
    runs over the last four days."""
    now = datetime.now(UTC)
    with psycopg.connect(url.url()) as conn:
        seed_uptake(conn)
        for day in range(5):
            run_id = f"2026112{day}T020000Z-00000{day}"
            started = now - timedelta(days=5 - day)
            last = day == 4
            _run(url, run_id, started, fail_at="validate" if last else None)
            ingestion_stats(
                conn,
                run_id,
                started_at=started,
                totals={k: v + 10 * day for k, v in TOTALS.items()},
                rejected={"users": day},
                retries={"tracks": 30 if last else day},
            )
            if last:
                conn.execute(
                    "update monitoring.ingestion_stats set http_errors = %s "
                    "where run_id = %s and endpoint = 'tracks'",
                    (Jsonb({"503": 2, "429": 28}), run_id),
                )
            write_results(
                conn, run_id, ["raw.ingestion"], _checks(run_id, failing=last),
                started + timedelta(minutes=2),
            )  # fmt: skip


@pytest.fixture
def ledger(fresh_warehouse: ConnectionURL) -> ConnectionURL:
    seed_ledger(fresh_warehouse)
    return fresh_warehouse


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in IMAGE.findall(page)]


def test_report_of_several_runs_has_every_plot_and_the_last_failures(
    ledger: ConnectionURL, tmp_path: Path
) -> None:
    path = write_health_report(ledger, tmp_path / "reports" / "health.html")
    page = path.read_text(encoding="utf-8")
    images = _images(page)
    assert len(images) == len(PLOTS) + 1  # and the uptake per day
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    # every plot drew data, none is the "no data yet" placeholder
    data, empty = load_report_data(ledger), load_report_data(ledger, max_runs=1)
    frames = (data.runs, data.steps, data.ingestion, data.validation)
    nothing = ReportData(*(frame.iloc[0:0] for frame in frames))
    for _, draw in PLOTS:
        assert png(draw(data)) != png(draw(nothing))
    assert len(empty.runs) == 1
    # the last run's failures
    last = page.split("<h2>Last run</h2>", 1)[1].split("<h2>", 1)[0]
    assert "20261124T020000Z-000004" in last and "status-failed" in last
    assert "2 error expectation(s) failed" in last
    assert "row_count_matches_api_total" in last and "retry_storm" in last
    assert "rejected_share" not in last  # passed
    assert "503: 2" in last and "http_429: 30" in last
    assert "Recent runs" in page


def test_report_is_self_contained(ledger: ConnectionURL, tmp_path: Path) -> None:
    page = write_health_report(ledger, tmp_path / "health.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)


def test_chromium_renders_the_report_offline(ledger: ConnectionURL, tmp_path: Path) -> None:
    page = write_health_report(ledger, tmp_path / "reports" / "health.html")
    shot = chromium.screenshot(page, tmp_path / "chromium", SCREEN)
    assert shot.requests == []  # nothing loaded from anywhere
    image = chromium.pixels(shot.output)
    assert image.shape == (SCREEN[1], SCREEN[0], 3)
    gray = image.mean(axis=2)
    assert gray.std() > 20  # not a blank page: text, tables and plots
    assert (gray < 128).mean() > 0.01  # a fair share of dark pixels (text, axes, bars)
    colors = {tuple(c) for c in image[::4, ::4].reshape(-1, 3)[::7]}
    assert len(colors) > 50  # the plots' colors, not just black on white


def _uptake_rows(page: str) -> list[list[str]]:
    """The uptake table's rows: model run, new tracks and the three uptakes."""
    section = page.split("<h2>Recommendation uptake</h2>", 1)[1].split("<h2>", 1)[0]
    rows = re.findall(r"<tr>(<td.*?)</tr>", section)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    return [[run, int(new), *shares] for run, _, _, new, *shares in cells]


def test_uptake_per_day_and_per_model_run(ledger: ConnectionURL, tmp_path: Path) -> None:
    data = load_report_data(ledger)
    days = per_day(data.uptake)
    lines = {line.get_label(): list(line.get_ydata()) for line in days.axes[0].get_lines()}
    assert set(lines) == set(UPTAKE_PER_DAY)
    for label, shares in UPTAKE_PER_DAY.items():
        assert lines[label] == pytest.approx(shares)
    first, last = (datetime.now(UTC) - timedelta(days=ago) for ago in (4, 2))
    assert _ticks(days) == [[day.strftime("%Y-%m-%d") for day in (first, first + DAY, last)]]
    page = write_health_report(ledger, tmp_path / "health.html").read_text(encoding="utf-8")
    assert _uptake_rows(page) == UPTAKE_PER_RUN and NOTE not in page


@pytest.mark.parametrize("rows", [None, ()], ids=["no mart", "an empty mart"])
def test_no_uptake_plot_without_uptake_rows(
    fresh_warehouse: ConnectionURL, tmp_path: Path, rows: tuple | None
) -> None:
    if rows is not None:
        with psycopg.connect(fresh_warehouse.url()) as conn:
            seed_uptake(conn, rows)
    page = write_health_report(fresh_warehouse, tmp_path / "health.html").read_text()
    assert len(_images(page)) == len(PLOTS)
    section = page.split("<h2>Recommendation uptake</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.strip() == f'<p class="empty">{NOTE}</p>'


def _ticks(figure) -> list[list[str]]:
    png(figure)  # drawn: the labels are set
    return [[label.get_text() for label in axes.get_xticklabels()] for axes in figure.axes]


def test_plots_have_one_tick_per_day_and_counts_from_zero(ledger: ConnectionURL) -> None:
    data = load_report_data(ledger)
    days = sorted({ts.strftime("%Y-%m-%d") for ts in data.ingestion["started_at"]})
    assert len(days) == 5
    assert _ticks(records_per_endpoint(data)) == [days, days]
    # several runs on one day: one tick, that day's date (not a run of "01-01" labels)
    one_day = data.ingestion.assign(started_at=data.ingestion["started_at"].max())
    assert _ticks(records_per_endpoint(replace(data, ingestion=one_day))) == [days[-1:]] * 2
    # no retries at all: the retries axis starts at 0, not below
    quiet = data.ingestion.assign(retries=[{}] * len(data.ingestion))
    retries_axes = request_health(replace(data, ingestion=quiet)).axes[1]
    assert retries_axes.get_ylim()[0] == 0 and retries_axes.get_ylim()[1] >= 1


def test_chromium_shows_only_failed_steps_and_the_uptake(
    ledger: ConnectionURL, tmp_path: Path
) -> None:
    page = write_health_report(ledger, tmp_path / "health.html")
    dom, requests = chromium.dump_dom(page, tmp_path / "chromium")
    assert requests == []
    failed = dom.split("<h3>Failed steps</h3>", 1)[1].split("<h3>", 1)[0]
    assert "<td>validate</td>" in failed
    assert "<td>report</td>" not in failed and "running" not in failed
    assert _uptake_rows(dom) == UPTAKE_PER_RUN  # the uptake table, as the browser shows it


def test_the_request_check_sees_a_page_that_loads_something(tmp_path: Path) -> None:
    """The control of the test above: a page with one remote image is caught."""
    page = tmp_path / "remote.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/probe.png"><p>x</p>')
    shot = chromium.screenshot(page, tmp_path / "chromium", (200, 100))
    assert shot.requests == ["http://127.0.0.1:9/probe.png"]


def test_report_renders_on_an_empty_warehouse(
    fresh_warehouse: ConnectionURL, tmp_path: Path
) -> None:
    page = write_health_report(fresh_warehouse, tmp_path / "health.html").read_text()
    assert len(_images(page)) == len(PLOTS)
    assert "No run recorded yet" in page
    assert not re.search(r"https?://", page)


def test_report_command_writes_the_page(warehouse_env: ConnectionURL, tmp_path: Path) -> None:
    output = tmp_path / "out" / "health.html"
    result = subprocess.run(
        [sys.executable, "-m", "expectations", "report", "--output", str(output)],
        cwd="/", capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"health report: {output}" in result.stdout
    assert output.is_file()


def test_report_step_of_the_daily_run(ledger: ConnectionURL, tmp_path: Path) -> None:
    settings = load_settings({}, root=tmp_path)
    ctx = RunContext(settings, "20261126T100000Z-eeeeee", ledger, "http://127.0.0.1:9", False)
    report = monitoring.health_report(ctx)
    path = tmp_path / "reports" / "health.html"
    assert path.is_file() and report.summary == f"health report: {path}"

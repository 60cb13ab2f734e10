"""The daily run's early exits through cron's entry point `bin/daily`, as a real subprocess: no
API, a held lock, no warehouse, each with its documented exit code (through `make daily` every
failure would be make's 2). Whole runs are in tests/e2e."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_lock import run_lock
from moovitamix.settings import load_settings
from moovitamix.step import RunContext, StepFailed, StepReport
from orchestrator.daily import run

pytestmark = pytest.mark.integration

SMALL = "--seed 3 --users 200 --tracks 100"


def _daily(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bin/daily` of `root`, a copy of the project (its closing step writes the health report
    in the project root)."""
    return subprocess.run(
        [str(root / "bin" / "daily")],
        cwd=Path("/"),  # works from any directory, as under cron
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "MOOVITAMIX_SIMULATOR_ARGS": SMALL, **(env or {})},
    )  # fmt: skip


def _runs(url: ConnectionURL) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(url.url()) as conn:
        return conn.execute(
            "select run_id, status, failed_step from monitoring.pipeline_runs order by started_at"
        ).fetchall()


def test_unreachable_api_fails_naming_the_step(
    warehouse_env: ConnectionURL, project_copy: Path
) -> None:
    result = _daily(project_copy, {"MOOVITAMIX_API_URL": "http://127.0.0.1:1"})
    assert result.returncode == exit_codes.SOURCE_UNREACHABLE
    assert "FAILED in step 'source'" in result.stderr
    assert "Traceback" not in result.stderr
    [(_, status, failed)] = _runs(warehouse_env)
    assert (status, failed) == ("failed", "source")


def test_second_run_while_one_runs_exits_at_once(
    warehouse_env: ConnectionURL, project_copy: Path
) -> None:
    lock = Path(os.environ["MOOVITAMIX_DATA_DIR"]) / "daily.lock"
    with run_lock(lock, "the-running-one"):
        result = _daily(project_copy)
    assert result.returncode == exit_codes.ALREADY_RUNNING
    assert "another run is in progress (run the-running-one" in result.stderr
    with psycopg.connect(warehouse_env.url()) as conn:
        ledger = conn.execute("select to_regclass('monitoring.pipeline_runs')").fetchone()
    assert ledger == (None,), "a refused run writes nothing"


def test_unreachable_warehouse_is_one_line(tmp_path: Path, project_copy: Path) -> None:
    result = _daily(
        project_copy,
        {
            "WAREHOUSE_URL": "postgresql://u:pw@127.0.0.1:1/wh",
            "MOOVITAMIX_DATA_DIR": str(tmp_path),
            "MOOVITAMIX_LOGS_DIR": str(tmp_path),
        },
    )
    assert result.returncode == exit_codes.WAREHOUSE_UNREACHABLE
    assert "FAILED step 'warehouse': cannot reach the warehouse (host 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr and "pw@" not in result.stderr


def test_a_failed_closing_step_fails_the_run_and_the_summary_keeps_every_step(
    warehouse_env: ConnectionURL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """In process, with the test's own steps: the run passes, then its closing step fails."""
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:1")  # no step asks it

    def fails(ctx: RunContext) -> StepReport:
        raise StepFailed("the report could not be written")

    steps = (("first", lambda ctx: StepReport("did its part")),)
    code = run(load_settings(), "run-closing", steps, (("report", fails),))
    assert code == exit_codes.STEP_FAILED
    summary = capsys.readouterr().err
    assert "Run run-closing: FAILED in step 'report'" in summary
    assert "did its part" in summary
    assert "report     failed: the report could not be written" in summary
    assert _runs(warehouse_env) == [("run-closing", "failed", "report")]


def test_memory_a_step_freed_is_given_back_before_the_next_step(monkeypatch) -> None:
    """The steps share one process: Arrow's pool and glibc's heap are trimmed after each."""
    import pyarrow

    from orchestrator import daily

    released: list[str] = []
    pool = pyarrow.default_memory_pool()
    monkeypatch.setattr(
        pyarrow, "default_memory_pool", lambda: released.append("arrow") or pool, raising=True
    )
    table = pyarrow.table({"x": list(range(200_000))})  # something in the pool
    del table
    daily.release_memory()
    assert released == ["arrow"]

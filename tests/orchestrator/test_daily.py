"""The daily run's early exits through cron's entry point `bin/daily`, as a real subprocess: no
API, a held lock, no warehouse, each with its documented exit code (through `make daily` every
failure would be make's 2). Whole runs are in tests/e2e."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_lock import run_lock
from moovitamix.settings import load_settings
from moovitamix.step import RunContext, StepFailed, StepReport
from orchestrator.daily import peak_rss_mb, run

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


def test_what_outlives_a_collection_between_steps_is_frozen_and_garbage_is_not() -> None:
    """release_memory collects a step's cyclic garbage, then freezes the survivors (the run's
    long-lived state) so the next collections do not walk them again."""
    import gc
    import weakref

    from orchestrator import daily

    class Node:
        pass

    garbage, kept = Node(), Node()
    garbage.self = garbage  # a cycle: only a collection frees it
    dead = weakref.ref(garbage)
    del garbage
    try:
        daily.release_memory()
        assert dead() is None, "the cyclic garbage is collected before the freeze"
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # frozen: not in a generation
    finally:
        gc.unfreeze()  # the test process goes on collecting as before


def test_the_run_imports_a_step_package_when_its_step_starts(tmp_path: Path) -> None:
    """A fresh interpreter: listing the steps imports none of the tools; a step's package
    (and its tool) is imported by calling it."""
    script = """
import sys
from orchestrator.steps import closing_steps, pipeline_steps
steps = dict(pipeline_steps() + closing_steps())
tools = ("dlt", "dbt", "great_expectations", "implicit", "matplotlib")
print(sorted(t for t in tools if t in sys.modules))
steps["erase"].load()
print(sorted(t for t in tools if t in sys.modules), "privacy.step" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert result.stdout.splitlines() == ["[]", "[] True"]


def test_the_run_works_while_its_simulator_starts(tmp_path: Path) -> None:
    """`meanwhile` runs once the simulator's process is started, before it is ready; with an
    API set (no simulator) it runs all the same."""
    from moovitamix.simulator_process import api_or_simulator

    settings = load_settings()
    done: list[str] = []
    with api_or_simulator(
        replace(settings, api_url=None, logs_dir=tmp_path),
        "run-meanwhile",
        SMALL.split(),
        meanwhile=lambda: done.append("meanwhile"),
    ) as (url, sim_log):
        done.append("ready")
        assert sim_log is not None and url.startswith("http://127.0.0.1:")
    with api_or_simulator(
        settings, "run-meanwhile", (), "http://127.0.0.1:1", meanwhile=lambda: done.append("api")
    ) as (url, sim_log):
        assert (url, sim_log) == ("http://127.0.0.1:1", None)
    assert done == ["meanwhile", "ready", "api"]


def test_the_ledger_and_the_summary_say_where_the_memory_peaked(
    warehouse_env: ConnectionURL, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Each step's row holds the process's peak RSS after it; the summary names the step that
    raised it last (here the one that holds 200 MB more than the process ever had)."""
    monkeypatch.setenv("MOOVITAMIX_API_URL", "http://127.0.0.1:1")  # no step asks it

    def holds_memory(ctx: RunContext) -> StepReport:
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE")
        above = max(0, int(peak_rss_mb() * 2**20) - resident) + 200 * 2**20
        block = bytearray(above)
        block[::4096] = b"x" * len(block[::4096])  # every page touched: resident
        return StepReport(f"held {len(block) // 2**20} MB")

    steps = (("small", lambda ctx: StepReport("nothing")), ("large", holds_memory))
    assert run(load_settings(), "run-memory", steps, (("after", lambda c: StepReport("")),)) == 0
    with psycopg.connect(warehouse_env.url()) as conn:
        peaks = dict(
            conn.execute(
                "select step, (details ->> 'process_peak_rss_mb')::float"
                " from monitoring.pipeline_run_steps where run_id = 'run-memory'"
            ).fetchall()
        )
    assert peaks["large"] >= peaks["small"] + 190
    assert peaks["after"] == peaks["large"]  # a high-water mark: the step after keeps it
    assert f"memory     peak RSS {peaks['large']:,.0f} MB (reached in large)" in (
        capsys.readouterr().out
    )

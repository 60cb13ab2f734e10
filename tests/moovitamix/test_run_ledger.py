"""The run ledger on a real warehouse: a run killed mid-step is found by the next one."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.run_ledger import RunLedger
from orchestrator.daily import _check_previous_runs


def test_a_run_left_running_is_marked_killed_with_its_step(fresh_warehouse: ConnectionURL) -> None:
    killed = RunLedger(fresh_warehouse, "killed-run")
    killed.ensure_tables()
    killed.start_run(source="http://api", warehouse="postgresql://wh")
    killed.start_step("ingest")
    finished = RunLedger(fresh_warehouse, "finished-run")
    finished.start_run(source="http://api", warehouse="postgresql://wh")
    finished.finish_run()

    assert RunLedger(fresh_warehouse, "next-run").close_abandoned_runs() == ["killed-run"]
    with psycopg.connect(fresh_warehouse.url()) as conn:
        runs = conn.execute(
            "select run_id, status, error_message from monitoring.pipeline_runs order by run_id"
        ).fetchall()
        steps = conn.execute(
            "select status, error_message from monitoring.pipeline_run_steps"
        ).fetchall()
    assert runs == [
        ("finished-run", "success", None),
        ("killed-run", "failed", "killed: the run ended without finishing (found by run next-run)"),
    ]
    assert steps == [("failed", "killed while running")]
    assert RunLedger(fresh_warehouse, "next-run").last_success_at() is not None


@pytest.mark.parametrize(("hours_ago", "alerted"), [(27, True), (25, False)])
def test_no_successful_run_in_the_last_day_is_alerted(
    fresh_warehouse: ConnectionURL, hours_ago: int, alerted: bool
) -> None:
    """The missed-run alert: the last success started more than 26 hours ago (the daily
    cadence plus slack) when the next run starts."""
    earlier = RunLedger(fresh_warehouse, "earlier-run")
    earlier.ensure_tables()
    earlier.start_run(source="http://api", warehouse="postgresql://wh")
    earlier.finish_run()
    with psycopg.connect(fresh_warehouse.url()) as conn:
        conn.execute(
            "update monitoring.pipeline_runs set started_at = now() - make_interval(hours => %s)"
            " where run_id = 'earlier-run'",
            (hours_ago,),
        )
    alerts: list[tuple[str, str, dict[str, object]]] = []
    ctx = SimpleNamespace(alert=lambda severity, title, **details: alerts.append(
        (severity, title, details)))  # fmt: skip
    _check_previous_runs(ctx, RunLedger(fresh_warehouse, "next-run"))  # type: ignore[arg-type]
    missed = [a for a in alerts if a[1] == "no successful run in the last day"]
    assert [a[0] for a in missed] == (["warning"] if alerted else [])
    assert len(alerts) == len(missed), "no other alert (no run was left running)"

"""The run ledger on a real warehouse: a run killed mid-step is found by the next one."""

from __future__ import annotations

import psycopg

from moovitamix.connection_url import ConnectionURL
from moovitamix.run_ledger import RunLedger


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

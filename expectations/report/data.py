"""What the health report shows, read from the run ledger, ingestion_stats, validation_results
and the uptake mart; a table that does not exist yet reads as empty (a brand-new warehouse)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg

from expectations import tables as t
from expectations.report import uptake
from moovitamix.connection_url import ConnectionURL
from moovitamix.warehouse import connect

STEPS = "monitoring.pipeline_run_steps"
EMPTY_LEDGER_WINDOW = timedelta(days=60)  # what is shown of standalone runs with no ledger yet

# The latest runs of the ledger (the window of the report), oldest first.
RUNS = f"""
    select run_id, started_at, finished_at, status, failed_step, error_message, seconds
    from (select * from {t.PIPELINE_RUNS} order by started_at desc limit %(max_runs)s) as r
    order by started_at
"""
STEP_ROWS = f"""
    select run_id, step, step_order, status, seconds, rows_in, rows_out, error_message
    from {STEPS} where run_id = any(%(runs)s) order by run_id, step_order
"""
# Ingestion and validation runs not in the ledger (run standalone) are shown too, within the
# same time window.
INGESTION = f"""
    select run_id, endpoint, status, api_total, records, rejected, requests, retries,
           http_errors, versions_added, seconds, started_at, error
    from {t.INGESTION_STATS} where started_at >= %(since)s order by started_at, endpoint
"""
VALIDATION = f"""
    select run_id, suite, expectation, severity, success, observed_value, threshold, validated_at
    from {t.VALIDATION_RESULTS} where validated_at >= %(since)s
    order by validated_at, suite, expectation, severity
"""


@dataclass(frozen=True)
class ReportData:
    runs: pd.DataFrame
    steps: pd.DataFrame
    ingestion: pd.DataFrame
    validation: pd.DataFrame
    uptake: pd.DataFrame = field(default_factory=pd.DataFrame)  # per day and model run


def _frame(
    conn: psycopg.Connection, table: str, query: str, params: dict[str, object]
) -> pd.DataFrame:
    if not t.existing_tables(conn, [table]):
        return pd.DataFrame()
    cursor = conn.execute(query, params)
    columns = [c.name for c in cursor.description or []]
    return pd.DataFrame(cursor.fetchall(), columns=columns)


def load_report_data(url: ConnectionURL, max_runs: int = 60) -> ReportData:
    with connect(url) as conn:
        runs = _frame(conn, t.PIPELINE_RUNS, RUNS, {"max_runs": max_runs})
        run_ids = list(runs["run_id"]) if not runs.empty else []
        steps = _frame(conn, STEPS, STEP_ROWS, {"runs": run_ids})
        since = (
            runs["started_at"].min().to_pydatetime()
            if not runs.empty
            else datetime.now(UTC) - EMPTY_LEDGER_WINDOW
        )
        window = {"since": since}
        ingestion = _frame(conn, t.INGESTION_STATS, INGESTION, window)
        validation = _frame(conn, t.VALIDATION_RESULTS, VALIDATION, window)
        uptake_rows = _frame(conn, uptake.MART, uptake.QUERY, window)
    return ReportData(runs, steps, ingestion, validation, uptake_rows)

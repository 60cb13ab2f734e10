"""The run ledger: `monitoring.pipeline_runs` and `monitoring.pipeline_run_steps`, each write
committed at once, so a run killed anywhere leaves a `running` row that the next run (holding the
run lock) marks `failed` (killed)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from moovitamix.connection_url import ConnectionURL
from moovitamix.warehouse import connect, ensure_tables

DDL = (Path(__file__).parent / "run_ledger.sql").read_text()
TABLES = ("monitoring.pipeline_runs", "monitoring.pipeline_run_steps")


class RunLedger:
    def __init__(self, url: ConnectionURL, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self._order = 0

    def ensure_tables(self) -> None:
        """Create the ledger's tables if missing: the publisher writes them, and their owner
        (mvx_loader, which owns monitoring's tables) alone may run the DDL's comments."""
        with connect(self.url) as conn:
            ensure_tables(conn, TABLES, DDL)

    def close_abandoned_runs(self) -> list[str]:
        """Mark runs still `running` as failed: called under the run lock, so none is alive."""
        with connect(self.url) as conn:
            rows = conn.execute(
                """
                with killed as (
                    update monitoring.pipeline_runs
                    set status = 'failed', finished_at = coalesce(finished_at, now()),
                        error_message = coalesce(error_message, '')
                            || 'killed: the run ended without finishing (found by run '
                            || %(run_id)s || ')'
                    where status = 'running' and run_id <> %(run_id)s
                    returning run_id
                ), steps as (
                    update monitoring.pipeline_run_steps
                    set status = 'failed', finished_at = coalesce(finished_at, now()),
                        error_message = coalesce(error_message, 'killed while running')
                    where status = 'running' and run_id in (select run_id from killed)
                )
                select run_id from killed
                """,
                {"run_id": self.run_id},
            ).fetchall()
        return [row[0] for row in rows]

    def last_success_at(self) -> datetime | None:
        """When the latest successful run (other than this one) started."""
        with connect(self.url) as conn:
            row = conn.execute(
                "select max(started_at) from monitoring.pipeline_runs "
                "where status = 'success' and run_id <> %s",
                (self.run_id,),
            ).fetchone()
        return row[0] if row else None

    def _write(self, query: str, params: tuple[object, ...]) -> None:
        with connect(self.url) as conn:
            conn.execute(query, params)

    def start_run(self, *, source: str, warehouse: str) -> None:
        self._write(
            "insert into monitoring.pipeline_runs "
            "(run_id, status, source, warehouse, hostname, pid) "
            "values (%s, 'running', %s, %s, %s, %s)",
            (self.run_id, source, warehouse, socket.gethostname(), os.getpid()),
        )

    def finish_run(self, *, failed_step: str | None = None, error: str | None = None) -> None:
        self._write(
            "update monitoring.pipeline_runs set finished_at = now(), status = %s, "
            "failed_step = %s, error_message = %s, "
            "seconds = extract(epoch from now() - started_at) where run_id = %s",
            ("failed" if failed_step else "success", failed_step, error, self.run_id),
        )

    def last_detail(self, step: str, key: str) -> float | None:
        """A number `step` recorded in its details (`key`) in its latest successful run."""
        with connect(self.url) as conn:
            row = conn.execute(
                "select (details ->> %s)::float from monitoring.pipeline_run_steps"
                " where step = %s and status = 'success' and details ? %s"
                " order by started_at desc limit 1",
                (key, step, key),
            ).fetchone()
        return row[0] if row else None

    def start_step(self, step: str, order: int | None = None) -> None:
        """`order`: the step's place in the run (steps may overlap); default: the next one."""
        place = order if order is not None else self._order + 1
        self._order = max(self._order, place)
        self._write(
            "insert into monitoring.pipeline_run_steps (run_id, step, step_order, status) "
            "values (%s, %s, %s, 'running')",
            (self.run_id, step, place),
        )

    def finish_step(
        self,
        step: str,
        *,
        seconds: float,
        rows_in: int | None = None,
        rows_out: int | None = None,
        details: Mapping[str, object] | None = None,
        error: str | None = None,
    ) -> None:
        status = "failed" if error else "success"
        encoded = json.dumps(details or {}, default=str)
        self._write(
            "update monitoring.pipeline_run_steps set finished_at = now(), status = %s, "
            "seconds = %s, rows_in = %s, rows_out = %s, details = %s, error_message = %s "
            "where run_id = %s and step = %s",
            (status, seconds, rows_in, rows_out, encoded, error, self.run_id, step),
        )

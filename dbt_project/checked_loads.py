"""Which loads' listen history elements a passing build has already checked.

The test that each element of a listen history version is in raw once
(`list_elements_written_once`, macros/tests) would group every element ever loaded, and raw
keeps every version's elements: its cost would grow with the history, not with the day's data.
A build that passed checked the elements of every load completed when it started; the transform
step records the newest of them in its row of the run ledger (`monitoring.pipeline_run_steps`,
details `elements_checked_through`), and the test of the next build reads it there
(macros/checked_loads.sql) and checks only later loads. Read at run time, not passed as a dbt
var: a var that changes every day would cost dbt a full parse of the project every day."""

from __future__ import annotations

import psycopg
from psycopg import sql

DETAIL = "elements_checked_through"  # the transform step's ledger detail (the macro reads it)


def newest_load(conn: psycopg.Connection, raw_schema: str = "raw") -> str | None:
    """The newest completed dlt load of `raw_schema` (None: no load, or no raw yet)."""
    loads = sql.Identifier(raw_schema, "_dlt_loads")
    found = conn.execute("select to_regclass(%s)", (loads.as_string(conn),)).fetchone()
    if not found or found[0] is None:
        return None
    row = conn.execute(
        sql.SQL(
            "select load_id from {} where status = 0 order by cast(load_id as numeric) desc limit 1"
        ).format(loads)
    ).fetchone()
    return str(row[0]) if row else None

"""monitoring.check_metrics (each check's metric per subject, what GX validates) and
monitoring.validation_results (one row per expectation): aggregates and counts, never records.
A check that could not run fails at its severity, saying so and why, never what it found."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from expectations import tables as t
from expectations.checks import Measured, format_value, observed
from moovitamix.errors import one_line

COLUMNS = (
    "run_id", "suite", "expectation", "severity", "success", "observed_value", "threshold",
    "expectation_type", "description", "observed", "validated_at",
)  # fmt: skip
MAX_OBSERVED_TEXT = 500


@dataclass(frozen=True)
class CheckResult:
    run_id: str
    suite: str
    expectation: str
    severity: str
    success: bool
    observed_value: str
    threshold: str
    expectation_type: str
    description: str
    observed: Mapping[str, Any] = field(default_factory=dict)
    alert_title: str = ""
    could_not_run: str = ""  # why: the check's query raised (it neither passed nor failed)


def _gx_error(gx_result: Any) -> str:
    """GX's own failure to evaluate the expectation (its query on check_metrics raised)."""
    info = gx_result.exception_info or {}
    infos = (
        [info]
        if "raised_exception" in info
        else [v for v in info.values() if isinstance(v, Mapping)]
    )
    messages = [i.get("exception_message") for i in infos if i.get("raised_exception")]
    return one_line(RuntimeError(messages[0])) if messages else ""


def check_result(run_id: str, suite: str, gx_result: Any, measured: Measured) -> CheckResult:
    """A CheckResult from one GX ExpectationValidationResult and what the check measured."""
    config = gx_result.expectation_config
    meta = config.meta
    check, reason = measured.check, measured.could_not_run or _gx_error(gx_result)
    text, found = observed(replace(measured, could_not_run=reason), check.unit, meta["limit"])
    return CheckResult(
        run_id=run_id,
        suite=suite,
        expectation=check.name,
        severity=meta["severity"],
        success=bool(gx_result.success) and not reason,
        observed_value=text[:MAX_OBSERVED_TEXT],
        threshold=f"<= {format_value(meta['limit'], check.unit)}",
        expectation_type=config.type,
        description=check.description,
        observed=found,
        alert_title=check.limits.alert or check.description,
        could_not_run=reason,
    )


def _replace(
    conn: psycopg.Connection,
    table: str,
    run_id: str,
    suites: Iterable[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> None:
    """Replace this run's rows of these suites (a run validated again keeps only the latest)."""
    t.create_if_missing(conn, table)
    conn.execute(
        f"delete from {table} where run_id = %s and suite = any(%s)", (run_id, list(suites))
    )
    marks = ", ".join(["%s"] * len(columns))
    conn.cursor().executemany(f"insert into {table} ({', '.join(columns)}) values ({marks})", rows)


def write_measured(
    conn: psycopg.Connection, run_id: str, measured: Mapping[str, Mapping[str, Measured]]
) -> None:
    """This run's metric rows (measured: by suite, then check), what GX validates."""
    rows = []
    for suite, by_check in measured.items():
        for check, m in by_check.items():
            key = (run_id, suite, check)
            if m.could_not_run:
                rows.append((*key, None, None, m.could_not_run, Jsonb({})))
            for row in m.rows:
                details = {k: v for k, v in row.items() if k not in ("subject", "observed")}
                value = None if row["observed"] is None else float(row["observed"])
                rows.append((*key, str(row["subject"]), value, None, Jsonb(details)))
    columns = ("run_id", "suite", "expectation", "subject", "observed", "could_not_run", "details")
    _replace(conn, t.CHECK_METRICS, run_id, measured, columns, rows)


def write_results(
    conn: psycopg.Connection,
    run_id: str,
    suites: Iterable[str],
    results: Iterable[CheckResult],
    validated_at: datetime,
) -> None:
    rows = [
        (*(getattr(r, c) for c in COLUMNS[:-2]), Jsonb(dict(r.observed)), validated_at)
        for r in results
    ]
    _replace(conn, t.VALIDATION_RESULTS, run_id, suites, COLUMNS, rows)

"""monitoring.validation_results: one row per expectation per run, queryable in SQL.

A check that could not run (its query raised) is told from a failed one by its row: observed_value
"could not run: <reason>" and `observed ? 'could_not_run'`; both fail the run at its severity.

Rows are built from GX's validation results and the `meta` every check carries (its name,
severity, limit). Observed values hold aggregates and counts only, never record contents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from expectations import tables as t
from expectations.checks import COULD_NOT_RUN, could_not_run_reason, format_value, observed_text
from moovitamix.warehouse import ensure_tables

DDL = f"""
create table if not exists {t.VALIDATION_RESULTS} (
    run_id text not null,
    suite text not null,
    expectation text not null,       -- the check's name (thresholds.toml without its layer)
    severity text not null check (severity in ('error', 'warning')),
    success boolean not null,
    observed_value text,             -- for people: '2.10% (users); 0.00% (tracks)'
    threshold text,                  -- '<= 1.00%'
    expectation_type text not null,  -- the GX expectation
    description text,
    observed jsonb not null default '{{}}'::jsonb,  -- for machines: the metric rows, counts
    validated_at timestamptz not null,
    primary key (run_id, suite, expectation, severity)
);
create index if not exists validation_results_validated_at_idx
    on {t.VALIDATION_RESULTS} (validated_at);
comment on table {t.VALIDATION_RESULTS} is
    'One row per Great Expectations expectation per run: severity (error fails the run, warning '
    'alerts), success, observed value and threshold.';
"""
COLUMNS = (
    "run_id", "suite", "expectation", "severity", "success", "observed_value", "threshold",
    "expectation_type", "description", "observed", "validated_at",
)  # fmt: skip
MAX_OBSERVED_TEXT = 500
# Counts GX reports for column expectations; its lists of unexpected values (PII) are left out.
_COLUMN_COUNTS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")


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

    @property
    def status(self) -> str:
        """'passed', 'failed', or 'could not run' (which fails the run like a failure)."""
        if self.could_not_run:
            return COULD_NOT_RUN
        return "passed" if self.success else "failed"

    def row(self, validated_at: datetime) -> tuple[object, ...]:
        values = {**self.__dict__, "observed": Jsonb(dict(self.observed))}
        values["validated_at"] = validated_at
        return tuple(values[name] for name in COLUMNS)


def _metric_observed(result: Mapping[str, Any], unit: str) -> tuple[str, dict[str, Any]]:
    subjects = result.get("details", {}).get("subjects", [])
    return observed_text(subjects, unit), {"subjects": subjects}


def _column_observed(result: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    counts = {key: result[key] for key in _COLUMN_COUNTS if key in result}
    if "element_count" not in counts:
        return "no data", counts
    share = (counts.get("unexpected_percent") or 0.0) / 100
    bad, total = counts.get("unexpected_count", 0), counts["element_count"]
    return f"{format_value(share, 'share')} ({bad:,} of {total:,} break it)", counts


def check_result(run_id: str, suite: str, gx_result: Any) -> CheckResult:
    """A CheckResult from one GX ExpectationValidationResult."""
    config = gx_result.expectation_config
    meta = config.meta or {}
    result = gx_result.result or {}
    reason = could_not_run_reason(gx_result.exception_info)
    if reason:
        observed_value, observed = f"{COULD_NOT_RUN}: {reason}", {"could_not_run": reason}
    elif "details" in result and "subjects" in result.get("details", {}):
        observed_value, observed = _metric_observed(result, meta.get("unit", ""))
    else:
        observed_value, observed = _column_observed(result)
    return CheckResult(
        run_id=run_id,
        suite=suite,
        expectation=meta.get("check", config.type),
        severity=meta.get("severity", "error"),
        success=bool(gx_result.success) and not reason,
        observed_value=observed_value[:MAX_OBSERVED_TEXT],
        threshold=meta.get("threshold", ""),
        expectation_type=config.type,
        description=config.description or "",
        observed=json.loads(json.dumps(observed, default=str)),
        alert_title=meta.get("alert", ""),
        could_not_run=reason or "",
    )


def ensure_validation_results(conn: psycopg.Connection) -> None:
    ensure_tables(conn, [t.VALIDATION_RESULTS], DDL)


def write_results(
    conn: psycopg.Connection,
    run_id: str,
    suites: Iterable[str],
    results: Iterable[CheckResult],
    validated_at: datetime,
) -> None:
    """Replace this run's rows of these suites (a run validated again keeps only the latest)."""
    ensure_validation_results(conn)
    conn.execute(
        f"delete from {t.VALIDATION_RESULTS} where run_id = %s and suite = any(%s)",
        (run_id, list(suites)),
    )
    marks = ", ".join(["%s"] * len(COLUMNS))
    with conn.cursor() as cursor:
        cursor.executemany(
            f"insert into {t.VALIDATION_RESULTS} ({', '.join(COLUMNS)}) values ({marks})",
            [r.row(validated_at) for r in results],
        )

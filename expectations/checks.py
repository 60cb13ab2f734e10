"""A check: a SQL query measuring a metric per subject (an endpoint, a table, the listens), with
its limits in thresholds.toml. Measured into monitoring.check_metrics, it becomes one stock GX
UnexpectedRowsExpectation per severity level, failing when a subject exceeds the level's limit
or the query could not run."""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from expectations.dialect import sql_text
from expectations.thresholds import CheckLimits, Severity

if TYPE_CHECKING:
    from great_expectations.expectations import UnexpectedRowsExpectation

Unit = Literal["share", "rows", "distance"]
GX_SEVERITY: dict[Severity, str] = {"error": "critical", "warning": "warning"}  # GX's names
MAX_SUBJECTS = 50  # rows of a metric kept in a result (metric queries return a few)


@dataclass(frozen=True)
class Check:
    """`query` returns `subject`, `observed` and context columns, reading the suite's batch as
    `{batch} as <alias>`; its wording is in thresholds.toml, with `{table}` filled in."""

    limits: CheckLimits
    query: str
    unit: Unit
    table: str = ""

    @property
    def name(self) -> str:
        return self.limits.check

    @property
    def description(self) -> str:
        return self.limits.description.replace("{table}", self.table)


@dataclass(frozen=True)
class Measured:
    """A check's metric rows in this run, or why its query could not run."""

    check: Check
    rows: tuple[Mapping[str, Any], ...] = ()
    could_not_run: str = ""


def format_value(value: object, unit: str) -> str:
    if value is None:
        return "n/a"
    if not isinstance(value, int | float | decimal.Decimal):
        return str(value)
    number = float(value)
    return {"share": f"{number:.2%}", "rows": f"{number:,.0f}"}.get(unit, f"{number:.3f}")


def _label(row: Mapping[str, Any]) -> str:
    """The subject; of a format check, '1 of 200 break it'."""
    if "breaking" in row:
        return f"{row['breaking'] or 0:,} of {row['checked_values'] or 0:,} break it"
    return str(row["subject"])


def observed(measured: Measured, unit: str, limit: float) -> tuple[str, dict[str, Any]]:
    """What a check measured, for people and for machines: '2.10% (users); 0.00% (tracks)'
    (breaching subjects first) and its rows, each marked `breach` when above `limit`; or
    'could not run: <reason>'."""
    if measured.could_not_run:
        reason = measured.could_not_run
        return f"could not run: {reason}", {"could_not_run": reason}
    rows = [
        {**row, "breach": row["observed"] is not None and row["observed"] > limit}
        for row in measured.rows[:MAX_SUBJECTS]
    ]
    ordered = sorted(rows, key=lambda row: not row["breach"])
    text = "; ".join(f"{format_value(r['observed'], unit)} ({_label(r)})" for r in ordered)
    return text or "no data", {"subjects": rows}


def expectations(
    check: Check, suite: str, run_id: str, measured: Measured | None = None
) -> list[UnexpectedRowsExpectation]:
    """One stock UnexpectedRowsExpectation per level, over this run's rows of the check in
    monitoring.check_metrics; the description ends with what was measured (the data docs show
    it), the `meta` names the check, its level and limit."""
    from great_expectations.expectations import UnexpectedRowsExpectation

    built = []
    for severity, limit in check.limits.levels.items():
        found = f"; this run: {observed(measured, check.unit, limit)[0]}" if measured else ""
        built.append(
            UnexpectedRowsExpectation(
                unexpected_rows_query=(
                    "select subject, observed, could_not_run from {batch} "
                    f"where run_id = {sql_text(run_id)} and suite = {sql_text(suite)} "
                    f"and expectation = {sql_text(check.name)} "
                    f"and (observed > {limit!r} or could_not_run is not null)"
                ),
                description=f"{check.description}: at most {format_value(limit, check.unit)} "
                f"({severity}){found}",
                severity=GX_SEVERITY[severity],
                meta={"check": check.name, "severity": severity, "limit": limit},
            )
        )
    return built

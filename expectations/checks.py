"""A check: a SQL query measuring a metric per subject (an endpoint, a table, the listens), and
its limits in thresholds.toml. Each validation measures the checks into monitoring.check_metrics
(expectations/measure.py); GX's stock UnexpectedRowsExpectation then fails a level whose limit a
subject exceeds, or whose query could not run. One expectation per severity level, with the
project's severity in `meta` and GX's own `severity` to match.
"""

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
COULD_NOT_RUN = "could not run"


@dataclass(frozen=True)
class Check:
    """`query` returns `subject`, `observed` and context columns, reading the suite's batch as
    `{batch} as <alias>`; `alert` titles the alert when it fails (default: the description)."""

    limits: CheckLimits
    query: str
    unit: Unit
    description: str
    alert: str = ""

    @property
    def name(self) -> str:
        return self.limits.check


@dataclass(frozen=True)
class Measured:
    """A check's metric rows in this run, or why its query could not run."""

    rows: tuple[Mapping[str, Any], ...] = ()
    could_not_run: str = ""


def format_value(value: object, unit: str) -> str:
    if value is None:
        return "n/a"
    if not isinstance(value, int | float | decimal.Decimal):
        return str(value)
    number = float(value)
    if unit == "share":
        return f"{number:.2%}"
    return f"{number:,.0f}" if unit == "rows" else f"{number:.3f}"


def observed_text(subjects: list[dict[str, Any]], unit: str) -> str:
    """'2.10% (users); 0.00% (tracks)', breaching subjects first; a format check's subject
    reads '1 of 200 break it'."""

    def label(row: dict[str, Any]) -> str:
        if "breaking" in row:
            return f"{row['breaking'] or 0:,} of {row['checked_values'] or 0:,} break it"
        return str(row.get("subject"))

    ordered = sorted(subjects, key=lambda row: not row.get("breach"))
    text = "; ".join(f"{format_value(r.get('observed'), unit)} ({label(r)})" for r in ordered)
    return text or "no data"


def expectations(
    check: Check, suite: str, run_id: str, measured: Measured | None = None
) -> list[UnexpectedRowsExpectation]:
    """One stock UnexpectedRowsExpectation per level, over this run's rows of the check in
    monitoring.check_metrics. The description carries what was measured (the data docs show
    it), the `meta` what the results table needs."""
    from great_expectations.expectations import UnexpectedRowsExpectation

    found = ""
    if measured is not None:
        found = f"; this run: {measured_text(check, measured, None)}"
    built = []
    for severity, limit in check.limits.levels.items():
        threshold = f"<= {format_value(limit, check.unit)}"
        built.append(
            UnexpectedRowsExpectation(
                unexpected_rows_query=(
                    "select subject, observed, could_not_run from {batch} "
                    f"where run_id = {sql_text(run_id)} and suite = {sql_text(suite)} "
                    f"and expectation = {sql_text(check.name)} "
                    f"and (observed > {limit!r} or could_not_run is not null)"
                ),
                description=f"{check.description}: at most {threshold[3:]} ({severity}){found}",
                severity=GX_SEVERITY[severity],
                meta={
                    "check": check.name,
                    "severity": severity,
                    "limit": limit,
                    "unit": check.unit,
                    "threshold": threshold,
                    "description": check.description,
                    "alert": check.alert or check.description,
                },
            )
        )
    return built


def subjects(measured: Measured, limit: float | None) -> list[dict[str, Any]]:
    """The measured rows, each marked `breach` when above `limit`."""
    return [
        {**row, "breach": limit is not None and row["observed"] is not None
         and row["observed"] > limit}
        for row in measured.rows
    ]  # fmt: skip


def measured_text(check: Check, measured: Measured, limit: float | None) -> str:
    if measured.could_not_run:
        return f"{COULD_NOT_RUN}: {measured.could_not_run}"
    return observed_text(subjects(measured, limit), check.unit)

"""The building blocks of the suites: a check is one expectation per severity level of its
limits in thresholds.toml, with the project's severity ("error" or "warning") in its `meta` and
GX's own `severity` set to match (critical or warning).

Most checks are metrics that SQL computes per subject (an endpoint, a table, the listens):
`ExpectMetricWithinLimit` runs the query, records every subject's value, and fails when one of
them is above the limit. Format checks use GX's own column expectations.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import great_expectations as gx
from great_expectations.compatibility.typing_extensions import override
from great_expectations.expectations import Expectation, UnexpectedRowsExpectation
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.render import LegacyDiagnosticRendererType
from great_expectations.render.renderer.renderer import renderer

from expectations.thresholds import CheckLimits, Severity

Unit = Literal["share", "rows", "distance"]
GX_SEVERITY: dict[Severity, FailureSeverity] = {
    "error": FailureSeverity.CRITICAL,
    "warning": FailureSeverity.WARNING,
}
MAX_SUBJECTS = 50  # rows of a metric query kept in a result (metric queries return a few)
COULD_NOT_RUN = "could not run"
_DRIVER_PREFIX = re.compile(r"^\([\w.]+\)\s*")  # "(psycopg2.errors.SyntaxError) "


def format_value(value: object, unit: str) -> str:
    if value is None:
        return "n/a"
    if not isinstance(value, int | float | decimal.Decimal):
        return str(value)
    number = float(value)
    if unit == "share":
        return f"{number:.2%}"
    if unit == "rows":
        return f"{number:,.0f}"
    return f"{number:.3f}"


def _plain(value: object) -> object:
    """A JSON-ready value: metric rows hold numbers, names and timestamps, never records."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def sql_text(value: str) -> str:
    """A SQL string literal, safe inside an unexpected_rows_query: quotes doubled, and braces
    doubled because GX fills `{batch}` with str.format."""
    escaped = value.replace("'", "''").replace("{", "{{").replace("}", "}}")
    return f"'{escaped}'"


def could_not_run_reason(exception_info: Mapping[str, Any] | None) -> str | None:
    """Why a check could not run (its query raised), from the `exception_info` GX puts on the
    expectation's result: one exception's fields, or a mapping of the failed metrics to theirs.
    None when it ran. One line: the driver's message without the exception's class name."""
    if not exception_info:
        return None
    if "raised_exception" in exception_info:
        infos = [exception_info] if exception_info.get("raised_exception") else []
    else:
        infos = [value for value in exception_info.values() if isinstance(value, Mapping)]
    for info in infos:
        message = str(info.get("exception_message") or "").strip()
        if info.get("raised_exception", True) and message:
            return _DRIVER_PREFIX.sub("", message.splitlines()[0]).strip() or message
    return None


def observed_text(subjects: list[dict[str, Any]], unit: str) -> str:
    """'2.10% (users); 0.00% (tracks)': breaching subjects first."""
    ordered = sorted(subjects, key=lambda row: not row.get("breach"))
    text = "; ".join(
        f"{format_value(row.get('observed'), unit)} ({row.get('subject')})" for row in ordered
    )
    return text or "no data"


class ExpectMetricWithinLimit(UnexpectedRowsExpectation):
    """The query returns one row per subject: `subject`, the metric in `observed`, context
    columns, and `breach` (true when `observed` is above the limit). The expectation fails when
    a row breaches; every row is kept in the result's details (aggregates only, never records).
    """

    # The rows only: the parent's row count would run the query a second time (GX computes
    # every metric an expectation declares), and `_validate` below does not read it.
    metric_dependencies: ClassVar[tuple[str, ...]] = ("unexpected_rows_query.table",)

    @override
    def _validate(
        self,
        metrics: dict,
        runtime_configuration: dict | None = None,
        execution_engine: Any = None,
    ) -> dict[str, Any]:
        rows = metrics["unexpected_rows_query.table"]
        plain = [{k: _plain(v) for k, v in row.items()} for row in rows[:MAX_SUBJECTS]]
        breaches = sum(1 for row in rows if row.get("breach"))
        return {
            "success": breaches == 0,
            "result": {"observed_value": breaches, "details": {"subjects": plain}},
        }

    @classmethod
    @renderer(renderer_type=LegacyDiagnosticRendererType.OBSERVED_VALUE)
    @override
    def _diagnostic_observed_value_renderer(
        cls,
        configuration: Any = None,
        result: Any = None,
        runtime_configuration: dict | None = None,
    ) -> str:
        """The data docs' "observed value": every subject's metric, not the breach count, or
        why the check could not run."""
        if result is None:
            return "--"
        reason = could_not_run_reason(result.exception_info)
        if reason:
            return f"{COULD_NOT_RUN}: {reason}"
        if not result.result:
            return "--"
        config = configuration or result.expectation_config
        unit = ((config.meta if config else None) or {}).get("unit", "")
        return observed_text(result.result.get("details", {}).get("subjects", []), unit)


def _meta(limits: CheckLimits, severity: Severity, limit: float, unit: str, **extra: str) -> dict:
    return {
        "check": limits.check,
        "severity": severity,
        "limit": limit,
        "unit": unit,
        "threshold": f"<= {format_value(limit, unit)}",
        **extra,
    }


def metric_checks(
    limits: CheckLimits,
    *,
    query: str,
    unit: Unit,
    description: str,
    alert: str | None = None,
) -> list[Expectation]:
    """One ExpectMetricWithinLimit per level of `limits`. `query` returns `subject`, `observed`
    and context columns, and may read the suite's batch as `{batch} as <alias>` (always with an
    alias: see below). `alert` is the alert's title when the check fails (default: the
    description)."""
    checks: list[Expectation] = []
    for severity, limit in limits.levels.items():
        # The limit joins in as a one-row relation. That join also fixes how GX fills `{batch}`:
        # in a query that joins, GX substitutes the batch's subquery without an alias and leaves
        # aliasing to the query (without one, it appends `AS subselect`). Every `{batch}` of a
        # metric query therefore carries an alias, which Postgres 14 and 15 require.
        sql = (
            "select m.*, coalesce(m.observed > lim.value, false) as breach "
            f"from ({query}) as m cross join (select {limit!r} as value) as lim"
        )
        checks.append(
            ExpectMetricWithinLimit(
                unexpected_rows_query=sql,
                description=f"{description}: at most {format_value(limit, unit)} ({severity})",
                severity=GX_SEVERITY[severity],
                meta=_meta(limits, severity, limit, unit, alert=alert or description),
            )
        )
    return checks


def format_checks(
    limits: CheckLimits, *, column: str, regex: str, description: str
) -> list[Expectation]:
    """One ExpectColumnValuesToMatchRegex per level: the limit is the share of values that may
    break the format (GX's `mostly` is its complement)."""
    checks: list[Expectation] = []
    for severity, limit in limits.levels.items():
        checks.append(
            gx.expectations.ExpectColumnValuesToMatchRegex(
                column=column,
                regex=regex,
                mostly=max(0.0, min(1.0, 1.0 - limit)),
                description=(
                    f"{description}: at most {format_value(limit, 'share')} break it ({severity})"
                ),
                severity=GX_SEVERITY[severity],
                meta=_meta(limits, severity, limit, "share", alert=description),
            )
        )
    return checks

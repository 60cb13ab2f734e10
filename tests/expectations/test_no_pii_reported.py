"""No suite reports a PII value (SECURITY.md, "PII"): read statically from every suite's
definition, on both engines' SQL.

What a validation reports is what a check's query returns: every column of its rows goes into
monitoring.check_metrics, the GX result (monitoring.validation_results, which analysts read) and
the data docs (expectations/checks.py, `observed`), and the one GX expectation per level reads
those rows back. So the rule the e-mail format check follows, generalised: a PII column may be
counted (`count(email)`) or tested (in a `where`, a `filter (where ...)`, a join condition),
never returned, whether plainly, renamed, through a CTE or a subquery, or inside an aggregate that
keeps a value (`max`, `string_agg`, ...); and no GX expectation reads a table directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from expectations import tables as t
from expectations.checks import expectations
from expectations.dialect import POSTGRES, Dialect
from expectations.spark_engine import SparkDialect
from expectations.suites import BuildContext, all_suites
from expectations.thresholds import load_thresholds

RUN = "20261126T000000Z-abcdef"
REPO = Path(__file__).resolve().parents[2]
PII_MART = REPO / "dbt_project/models/marts/dim_users_pii.sql"
PII_COLUMNS = {"email", "first_name", "last_name"}
# a PII column is reported only where its value is reduced to a count or a truth value
REDUCING = (exp.Count, exp.Where, exp.Having, exp.Join)
DIALECTS = {
    "postgres": (POSTGRES, "postgres"),
    "spark": (SparkDialect(current_loads=dict.fromkeys(t.RAW_TABLES.values(), "1")), "spark"),
}


def test_the_pii_columns_are_those_of_the_pii_mart() -> None:
    """The list this test guards is the restricted mart's personal columns, not a guess."""
    final = PII_MART.read_text().split("final as (", 1)[1].split("from", 1)[0]
    columns = set(re.findall(r"\b([a-z_]+)\b,?\s*$", final, flags=re.MULTILINE)) - {"select"}
    assert columns - {"user_id"} == PII_COLUMNS


def reported_pii(query: str, dialect: str) -> list[str]:
    """The PII columns `query` can return a value of: each reference to one that is neither
    counted nor only tested."""
    found = []
    for tree in sqlglot.parse(query, read=dialect):
        assert tree is not None
        for column in tree.find_all(exp.Column):
            if column.name.lower() not in PII_COLUMNS:
                continue
            if not any(isinstance(node, REDUCING) for node in _ancestors(column)):
                found.append(column.sql(dialect=dialect))
        if any(projection.is_star for projection in tree.selects):  # what the query returns
            found.append("a `*` in the rows it returns")
    return found


def _ancestors(node: exp.Expression) -> list[exp.Expression]:
    ancestors = []
    while node.parent is not None:
        node = node.parent
        ancestors.append(node)
    return ancestors


def _queries(dialect: Dialect) -> list[tuple[str, str]]:
    """(where, SQL) of every query a validation runs: each check's, its batch filled in, and
    each GX expectation's."""
    ctx = BuildContext(RUN, load_thresholds(), dialect=dialect)
    queries = []
    for spec in all_suites():
        for check in spec.build(ctx):
            where = f"{spec.name}/{check.name}"
            queries.append((where, check.query.replace("{batch}", spec.batch(ctx))))
            for expectation in expectations(check, spec.name, RUN):
                assert type(expectation).__name__ == "UnexpectedRowsExpectation", where
                gx_query = expectation.unexpected_rows_query.replace("{batch}", t.CHECK_METRICS)
                queries.append((f"{where} (GX, {expectation.severity})", gx_query))
    return queries


@pytest.mark.parametrize("engine", DIALECTS)
def test_no_suite_returns_a_pii_value(engine: str) -> None:
    dialect, sql_dialect = DIALECTS[engine]
    queries = _queries(dialect)
    reported = {where: found for where, q in queries if (found := reported_pii(q, sql_dialect))}
    assert not reported, f"checks that report PII values: {reported}"
    # the control: the e-mail check does read a PII column, and passes by counting it
    (email_check,) = [
        q
        for where, q in queries
        if where.startswith("raw.users/") and "email" in where and "GX" not in where
    ]
    columns = sqlglot.parse_one(email_check, read=sql_dialect).find_all(exp.Column)
    assert "email" in {column.name for column in columns}


@pytest.mark.parametrize(
    ("query", "leaks"),
    [
        ("select count(email) as checked, count(*) filter (where email !~ 'x') as bad from u", 0),
        ("select 'users' as subject, count(*) from u join v on v.email = u.email", 0),
        ("select email as subject, 1 as observed from u", 1),
        ("select max(email) as sample, count(*) as observed from u", 1),
        ("select string_agg(first_name, ',') as names from u where email is null", 1),
        ("with x as (select last_name as n from u) select count(*) as observed from x", 1),
        ("select (select email from u limit 1) as subject", 1),
        ("select * from (select * from u) as b", 1),
    ],
)
def test_the_rule_catches_what_would_leak(query: str, leaks: int) -> None:
    assert len(reported_pii(query, "postgres")) == leaks

"""The Spark side of the suites without a Spark: the checks built for Spark carry none of the
Postgres-only SQL (the queries themselves run in test_spark_validation.py)."""

from __future__ import annotations

import re

import pytest

from expectations.dialect import POSTGRES, Dialect
from expectations.spark_engine import SparkDialect
from expectations.suites import BuildContext, all_suites
from expectations.thresholds import load_thresholds

SPARK = SparkDialect(current_loads={"raw.users": "1764586400.2"})
POSTGRES_ONLY = re.compile(
    r"::float8|::bigint|distinct on|jsonb_|\bnow\(\)|select from|interval '| ~ "
)


def _queries(dialect: Dialect) -> list[str]:
    context = BuildContext("20261126T000000Z-abcdef", load_thresholds(), dialect=dialect)
    return [check.query for spec in all_suites() for check in spec.build(context)]


def test_suites_built_for_spark_use_no_postgres_only_sql() -> None:
    spark, postgres = _queries(SPARK), _queries(POSTGRES)
    # the 16 expectations: one check has two levels; the suppression check is Postgres only
    assert (len(spark), len(postgres)) == (14, 15)
    assert [q for q in spark if POSTGRES_ONLY.search(q)] == []
    assert any(POSTGRES_ONLY.search(q) for q in postgres)  # the pattern does catch them


@pytest.mark.parametrize(
    ("table", "predicate"),
    [("raw.users", "_dlt_load_id = '1764586400.2'"), ("raw.tracks", "false")],
)
def test_current_raw_rows_on_spark_are_the_latest_completed_load(
    table: str, predicate: str
) -> None:
    assert SPARK.current_rows(table) == predicate
    assert POSTGRES.current_rows(table) == "_dlt_valid_to is null"

"""The SQL the suites write through a dialect: Postgres (14-18) here; Spark SQL overrides it in
expectations/spark_engine.py. The suites write the rest once for both."""

from __future__ import annotations


def sql_text(value: str) -> str:
    """A SQL string literal: quotes doubled, and braces (queries are filled with str.format)."""
    escaped = value.replace("'", "''").replace("{", "{{").replace("}", "}}")
    return f"'{escaped}'"


class Dialect:
    """Postgres."""

    def as_float(self, expr: str) -> str:
        return f"({expr})::float8"

    def now(self) -> str:
        return "now()"

    def now_plus_minutes(self, minutes: int) -> str:
        return f"now() + interval '{int(minutes)} minutes'"

    def not_matching(self, column: str, regex: str) -> str:
        return f"not ({column} ~ {sql_text(regex)})"

    def json_values_sum(self, column: str, alias: str) -> str:
        """A one-row select of the sum of a JSON object's values, for a lateral join."""
        return f"select coalesce(sum(value::bigint), 0) as {alias} from jsonb_each_text({column})"

    def current_rows(self, table: str) -> str:
        """A predicate on a raw table's rows: the current version of each record (dlt's scd2
        closes a version with `_dlt_valid_to`)."""
        return "_dlt_valid_to is null"


POSTGRES = Dialect()

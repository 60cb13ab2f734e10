"""The SQL that differs between Postgres (14-18) and Spark SQL; the suites write the rest once.

Current raw rows differ too: dlt's scd2 tables in Postgres close a version with `_dlt_valid_to`;
the lake keeps a snapshot per load, whose current rows are those of its latest completed load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from expectations import tables as t


def sql_text(value: str) -> str:
    """A SQL string literal: quotes doubled, and braces (queries are filled with str.format)."""
    escaped = value.replace("'", "''").replace("{", "{{").replace("}", "}}")
    return f"'{escaped}'"


@dataclass(frozen=True)
class Dialect:
    engine: Literal["postgres", "spark"]
    # Spark: the latest completed load of each raw table; a table with none has no current rows
    current_loads: Mapping[str, str] = field(default_factory=dict)

    @property
    def postgres(self) -> bool:
        return self.engine == "postgres"

    def as_float(self, expr: str) -> str:
        return f"({expr})::float8" if self.postgres else f"cast({expr} as double)"

    def now(self) -> str:
        return "now()" if self.postgres else "current_timestamp()"

    def now_plus_minutes(self, minutes: int) -> str:
        if self.postgres:
            return f"now() + interval '{int(minutes)} minutes'"
        return f"current_timestamp() + interval {int(minutes)} minutes"

    def not_matching(self, column: str, regex: str) -> str:
        """`column` does not match `regex` (Spark's string literals unescape backslashes)."""
        if self.postgres:
            return f"not ({column} ~ {sql_text(regex)})"
        return f"not ({column} rlike {sql_text(regex.replace(chr(92), chr(92) * 2))})"

    def json_values_sum(self, column: str, alias: str) -> str:
        """A one-row select of the sum of a JSON object's values, for a lateral join (on Spark
        the object is the JSON text of the Postgres jsonb)."""
        if self.postgres:
            return (
                f"select coalesce(sum(value::bigint), 0) as {alias} from jsonb_each_text({column})"
            )
        values = f"map_values(from_json({column}, 'map<string,bigint>'))"
        total = f"aggregate({values}, cast(0 as bigint), (acc, v) -> acc + coalesce(v, 0))"
        return f"select coalesce({total}, 0) as {alias}"

    def current_rows(self, table: str) -> str:
        """A predicate on `table`'s rows: the current version of each record."""
        if self.postgres:
            return t.CURRENT
        load = self.current_loads.get(table)
        return "false" if load is None else f"_dlt_load_id = {sql_text(load)}"


POSTGRES = Dialect("postgres")

"""The few SQL differences between the engines the suites run on: Postgres (14-18) and Spark
SQL 4. The suites write one query per check and route these pieces through the run's dialect;
everything else they write is SQL both engines read the same way (`filter (where ...)`,
`greatest`, `full join`, correlated and lateral subqueries, `row_number() over (...)`).

Which rows of raw are current differs too: dlt's scd2 tables in Postgres close a version with
`_dlt_valid_to`; the lake keeps one complete snapshot per load, so the current rows of a table
are those of its latest completed load (found once per validation: expectations/spark_source.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from expectations import tables as t

Engine = Literal["postgres", "spark"]


@dataclass(frozen=True)
class Dialect:
    engine: Engine
    # Spark: the latest completed load of each raw table ("raw.users" -> load id); a table with
    # none has no current rows
    current_loads: Mapping[str, str] = field(default_factory=dict)

    def as_float(self, expr: str) -> str:
        """`expr` as a double (Spark has no `float8`, Postgres no `double` type name)."""
        return f"({expr})::float8" if self.engine == "postgres" else f"cast({expr} as double)"

    def now_plus_minutes(self, minutes: int) -> str:
        """The current time plus `minutes` (a timestamptz on Postgres, a timestamp on Spark)."""
        if self.engine == "postgres":
            return f"now() + interval '{int(minutes)} minutes'"
        return f"current_timestamp() + interval {int(minutes)} minutes"

    def now(self) -> str:
        return "now()" if self.engine == "postgres" else "current_timestamp()"

    def json_values_sum(self, column: str, alias: str) -> str:
        """A one-row select of the sum of a JSON object's values (`{"http_429": 3, ...}`), as
        bigint named `alias`, for a lateral join. On Spark the object is JSON text (the
        Postgres table's jsonb, fetched as text)."""
        if self.engine == "postgres":
            return (
                f"select coalesce(sum(value::bigint), 0) as {alias} from jsonb_each_text({column})"
            )
        values = f"map_values(from_json({column}, 'map<string,bigint>'))"
        total = f"aggregate({values}, cast(0 as bigint), (acc, v) -> acc + coalesce(v, 0))"
        return f"select coalesce({total}, 0) as {alias}"

    def current_rows(self, table: str) -> str:
        """A predicate on `table`'s rows: the current version of each record."""
        if self.engine == "postgres":
            return t.CURRENT
        load = self.current_loads.get(table)
        if load is None:
            return "false"
        # a literal inside an unexpected_rows_query: quotes doubled, and braces (GX fills
        # `{batch}` with str.format)
        escaped = load.replace("'", "''").replace("{", "{{").replace("}", "}}")
        return f"_dlt_load_id = '{escaped}'"


POSTGRES = Dialect("postgres")

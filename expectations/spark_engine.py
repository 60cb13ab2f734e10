"""The checks' engine on Spark: raw in the lake, the marts in their slot, queried in the process's
Spark session. The control plane stays in Postgres: the small tables the suites read there are
copied into temporary views `pg_<schema>__<table>` for one validation; of the staged lists, only
their users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from psycopg import sql

from expectations import tables as t
from expectations.dialect import Dialect, sql_text
from expectations.engines import plain
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Relations
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    import psycopg
    from pyspark.sql import SparkSession

DLT_LOADS = "raw._dlt_loads"
CONTROL_PLANE = ("monitoring", "recommendations")  # schemas in Postgres on every engine
# Postgres types as Spark's; any other (json, jsonb, ...) is fetched as text
SPARK_TYPES = {
    "bigint": "bigint", "integer": "int", "smallint": "smallint", "boolean": "boolean",
    "double precision": "double", "real": "double", "numeric": "double", "date": "date",
    "timestamp with time zone": "timestamp", "timestamp without time zone": "timestamp",
}  # fmt: skip


@dataclass(frozen=True)
class SparkDialect(Dialect):
    """Spark SQL where it differs from Postgres'."""

    # the latest completed load of each raw table; a table with none has no current rows
    current_loads: Mapping[str, str] = field(default_factory=dict)

    def as_float(self, expr: str) -> str:
        return f"cast({expr} as double)"

    def now(self) -> str:
        return "current_timestamp()"

    def now_plus_minutes(self, minutes: int) -> str:
        return f"current_timestamp() + interval {int(minutes)} minutes"

    def not_matching(self, column: str, regex: str) -> str:
        """Spark's string literals unescape backslashes: the regex's are doubled."""
        return f"not ({column} rlike {sql_text(regex.replace(chr(92), chr(92) * 2))})"

    def json_values_sum(self, column: str, alias: str) -> str:
        """The object is the JSON text of the Postgres jsonb (a control-plane view)."""
        values = f"map_values(from_json({column}, 'map<string,bigint>'))"
        total = f"aggregate({values}, cast(0 as bigint), (acc, v) -> acc + coalesce(v, 0))"
        return f"select coalesce({total}, 0) as {alias}"

    def current_rows(self, table: str) -> str:
        """The lake keeps a snapshot per load: the rows of the table's latest completed load."""
        load = self.current_loads.get(table)
        return "false" if load is None else f"_dlt_load_id = {sql_text(load)}"


@dataclass
class SparkEngine:
    url: ConnectionURL
    relations: Relations
    spark: SparkSession
    dialect: Dialect = field(default_factory=SparkDialect)
    views: list[str] = field(default_factory=list)

    def rows(self, query: str) -> list[dict[str, Any]]:
        collected = self.spark.sql(query).collect()
        return [{k: plain(v) for k, v in row.asDict().items()} for row in collected]

    def existing(self, tables: Iterable[str]) -> set[str]:
        return {table for table in set(tables) if self.spark.catalog.tableExists(table)}

    def load(self, tables: Iterable[str]) -> None:
        """The control-plane tables into views (a missing one gets none: its suite is
        skipped), and the latest completed load of each raw table."""
        needed = set(tables)
        views = {}
        with connect(self.url) as conn:
            for table in sorted(n for n in needed if n.split(".")[0] in CONTROL_PLANE):
                source = self.relations(table)
                views[table] = view = "pg_" + source.replace(".", "__")
                if t.existing_tables(conn, [source]):
                    rows, schema = self._fetch(conn, source, t.LIST_OWNERS.get(table))
                    self.spark.createDataFrame(rows, schema).createOrReplaceTempView(view)
                    self.views.append(view)
        loads = {}
        if self.existing([DLT_LOADS]):
            for table in self.existing(n for n in t.RAW_TABLES.values() if n in needed):
                (row,) = self.rows(
                    f"select max(l.load_id) as load_id from {DLT_LOADS} as l where l.status = 0 "
                    f"and l.load_id in (select distinct r._dlt_load_id from {table} as r)"
                )
                if row["load_id"] is not None:
                    loads[table] = str(row["load_id"])
        self.relations = replace(self.relations, tables={**self.relations.tables, **views})
        self.dialect = SparkDialect(current_loads=loads)

    @staticmethod
    def _fetch(conn: psycopg.Connection, table: str, owner: str | None) -> tuple[list, str]:
        """A Postgres table's rows and their Spark schema; of the lists, one row per `owner`
        (the user or track whose list it is), with its row count."""
        name = sql.Identifier(*table.split(".", 1))
        if owner:
            query = sql.SQL("select {0}, count(*) from {1} group by {0}").format(
                sql.Identifier(owner), name
            )
            return conn.execute(query).fetchall(), f"{owner} bigint, recommendations bigint"
        columns = conn.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = %s order by ordinal_position",
            tuple(table.split(".", 1)),
        ).fetchall()
        selected, schema = [], []
        for column, data_type in columns:
            spark_type = SPARK_TYPES.get(str(data_type), "string")
            cast = {"string": "text", "double": "float8"}.get(spark_type)
            expression = sql.Identifier(column)
            selected.append(
                sql.SQL("{}::{}").format(expression, sql.SQL(cast)) if cast else expression
            )
            schema.append(f"`{column}` {spark_type}")
        query = sql.SQL("select {} from {}").format(sql.SQL(", ").join(selected), name)
        return conn.execute(query).fetchall(), ", ".join(schema)

    def drop_views(self) -> None:
        for view in self.views:
            self.spark.catalog.dropTempView(view)
        self.views.clear()

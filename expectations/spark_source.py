"""What the suites read on the Spark engine: the data plane in Spark, the control plane made
visible to Spark for the length of one validation.

In Spark (the process's session, moovitamix.spark): raw (`raw.<table>`, one snapshot per load;
the current rows are those of the table's latest completed load, `raw._dlt_loads.status = 0`)
and the marts (the candidate slot `marts_a`/`marts_b` in the daily run, the views of `marts`
otherwise). In Postgres: what the suites read from the control plane. Those tables are small
and are fetched whole with psycopg into Spark temporary views, named `pg_<schema>__<table>`:
monitoring.ingestion_stats, monitoring.run_metrics (after this run's figures are recorded),
monitoring.pipeline_runs. The staged recommendation lists are large (users x ranks): only
their users are fetched (`user_id`, `recommendations`: one row per user with a list), which is
all the recommendations suite asks of them. json/jsonb columns arrive as JSON text.

Every suite then reads Spark only: GX's Spark datasource is given each suite's table as a
dataframe, and its queries run with `spark.sql` in the same session (expectations/dialect.py
holds the SQL that differs). The temporary views are dropped when the validation ends; the
session is left running (the daily run's other steps use it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from expectations import tables as t
from expectations.dialect import Dialect
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Relations
from moovitamix.spark import spark_session
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    import psycopg
    from pyspark.sql import DataFrame, SparkSession

    from expectations.suites import SuiteSpec
    from moovitamix.settings import Settings

log = logging.getLogger(__name__)

DLT_LOADS = "raw._dlt_loads"
CONTROL_PLANE_SCHEMAS = ("monitoring", "recommendations")  # in Postgres on every engine
# Postgres data types as Spark types; any other type (json, jsonb, numeric, ...) is fetched as
# text, except numeric, fetched as double
SPARK_TYPES = {
    "text": "string",
    "character varying": "string",
    "bigint": "bigint",
    "integer": "int",
    "smallint": "smallint",
    "double precision": "double",
    "real": "double",
    "numeric": "double",
    "boolean": "boolean",
    "timestamp with time zone": "timestamp",
    "timestamp without time zone": "timestamp",
    "date": "date",
}


def in_postgres(table: str) -> bool:
    """Whether `table` ("schema.table", as the suites name it) lives in the control plane."""
    return table.split(".", 1)[0] in CONTROL_PLANE_SCHEMAS


def view_name(table: str) -> str:
    """The Spark temporary view of a Postgres table: `pg_monitoring__run_metrics`."""
    return "pg_" + table.replace(".", "__")


def _columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".", 1)
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, name),
    ).fetchall()
    return [(str(column), str(data_type)) for column, data_type in rows]


def _fetch_whole(
    spark: SparkSession, conn: psycopg.Connection, table: str, columns: list[tuple[str, str]]
) -> DataFrame:
    selected, schema = [], []
    for column, data_type in columns:
        spark_type = SPARK_TYPES.get(data_type, "string")
        cast = {"string": "text", "double": "float8"}.get(spark_type)
        expression = sql.Identifier(column)
        if cast and data_type not in ("text", "character varying", "double precision"):
            expression = sql.SQL("{}::{}").format(expression, sql.SQL(cast))
        selected.append(expression)
        schema.append(f"`{column}` {spark_type}")
    query = sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(selected), sql.Identifier(*table.split(".", 1))
    )
    rows = conn.execute(query).fetchall()
    return spark.createDataFrame(rows, ", ".join(schema))


def _fetch_users(spark: SparkSession, conn: psycopg.Connection, table: str) -> DataFrame:
    query = sql.SQL("select user_id, count(*) as recommendations from {} group by user_id").format(
        sql.Identifier(*table.split(".", 1))
    )
    rows = conn.execute(query).fetchall()
    return spark.createDataFrame(rows, "user_id bigint, recommendations bigint")


def _latest_completed_load(spark: SparkSession, table: str) -> str | None:
    """The latest completed load that wrote rows of `table` (dlt's load ids sort by time)."""
    row = spark.sql(
        f"""
        select max(l.load_id) as load_id
        from {DLT_LOADS} as l
        where l.status = 0
          and l.load_id in (select distinct r._dlt_load_id from {table} as r)"""
    ).first()
    return None if row is None or row["load_id"] is None else str(row["load_id"])


@dataclass
class SparkSource:
    """The Spark session with this validation's views, where the suites' tables are, and the
    dialect of their SQL."""

    spark: SparkSession
    relations: Relations  # the suites' table names -> Spark tables and temporary views
    dialect: Dialect
    views: list[str] = field(default_factory=list)

    def existing(self, tables: Iterable[str]) -> set[str]:
        return {table for table in set(tables) if self.spark.catalog.tableExists(table)}

    def dataframe(self, spec: SuiteSpec) -> DataFrame:
        """The batch of a suite located on `relations` (SuiteSpec.located)."""
        from pyspark.sql import functions as F

        asset = spec.asset
        if asset.current_of is not None:
            table = self.spark.table(self.relations(asset.current_of))
            load = self.dialect.current_loads.get(asset.current_of)
            return table.where(F.col("_dlt_load_id") == load if load else F.lit(False))
        assert asset.table is not None, f"{asset.name}: a Spark batch is a table or raw's rows"
        return self.spark.table(asset.table)

    def drop_views(self) -> None:
        for view in self.views:
            self.spark.catalog.dropTempView(view)
        self.views.clear()


def _control_plane_views(
    spark: SparkSession, url: ConnectionURL, relations: Relations, tables: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Fetch the control-plane tables (as the suites name them) that exist in Postgres into
    temporary views. Returns {suite's name: view} for all of them (the view of a table that
    does not exist is not created: its suite is skipped) and the views created."""
    names = {table: view_name(relations(table)) for table in tables}
    created: list[str] = []
    with connect(url) as conn:
        present = t.existing_tables(conn, [relations(table) for table in tables])
        for table in tables:
            source = relations(table)
            if source not in present:
                continue
            if table == t.USER_TOP_TRACKS:
                frame = _fetch_users(spark, conn, source)
            else:
                frame = _fetch_whole(spark, conn, source, _columns(conn, source))
            frame.createOrReplaceTempView(names[table])
            created.append(names[table])
    log.info("control plane in Spark: %s", ", ".join(created) or "nothing")
    return names, created


@contextmanager
def spark_source(
    settings: Settings, url: ConnectionURL, relations: Relations, specs: Sequence[SuiteSpec]
) -> Iterator[SparkSource]:
    """The Spark side of validating `specs` (not yet located) on the tables `relations`
    names; the temporary views live until the block ends."""
    spark = spark_session(settings)
    needed = {table for spec in specs for table in (*spec.requires, spec.asset.table or "")}
    control_plane = sorted(table for table in needed if table and in_postgres(table))
    views, created = _control_plane_views(spark, url, relations, control_plane)
    source = SparkSource(
        spark,
        Relations(schemas=dict(relations.schemas), tables={**relations.tables, **views}),
        Dialect("spark"),
        created,
    )
    try:
        loads = {}
        raw_tables = [table for table in t.RAW_TABLES.values() if table in needed]
        if source.existing([DLT_LOADS]):
            for table in source.existing(raw_tables):
                load = _latest_completed_load(spark, table)
                if load is not None:
                    loads[table] = load
        source.dialect = Dialect("spark", current_loads=loads)
        yield source
    finally:
        source.drop_views()

"""Where the checks' SQL runs: the warehouse (Postgres), or on the Spark engine the process's
Spark session (expectations/spark_engine.py). Both return rows as JSON-ready dicts."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from expectations import tables as t
from expectations.dialect import POSTGRES, Dialect
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Relations
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    import psycopg

    from expectations.spark_engine import SparkEngine
    from moovitamix.settings import Settings


def plain(value: object) -> object:
    """A JSON-ready value: metric rows hold numbers, names and timestamps."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


@dataclass
class Engine:
    """The warehouse: queries run in Postgres."""

    url: ConnectionURL
    relations: Relations
    conn: psycopg.Connection
    dialect: Dialect = POSTGRES

    def rows(self, query: str) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            return [{k: plain(v) for k, v in row.items()} for row in cursor.execute(query)]

    def existing(self, tables: Iterable[str]) -> set[str]:
        return t.existing_tables(self.conn, tables)

    def load(self, tables: Iterable[str]) -> None:
        """Make `tables` (as the suites name them) readable; in Postgres they are."""


@contextmanager
def open_engine(
    settings: Settings, url: ConnectionURL, relations: Relations
) -> Iterator[Engine | SparkEngine]:
    """The engine of `settings`, reading the tables `relations` names."""
    if settings.engine != "spark":
        with connect(url, autocommit=True) as conn:
            yield Engine(url, relations, conn)
        return
    from expectations.spark_engine import SparkEngine
    from moovitamix.spark import spark_session

    engine = SparkEngine(url, relations, spark=spark_session(settings))
    try:
        yield engine
    finally:
        engine.drop_views()

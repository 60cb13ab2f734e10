"""monitoring.run_metrics on the Spark engine: this run's figures measured on the Spark marts,
stored in Postgres like those of a Postgres run (expectations/run_metrics.py), so the
day-over-day checks compare with the previous successful run whichever engine ran it.

Same figures, same names: row counts of [metrics].volume_tables under the published names
("marts.dim_users"), and the genre shares of marts.user_genre_features.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from expectations import tables as t
from expectations.run_metrics import ensure_run_metrics
from expectations.thresholds import Thresholds
from moovitamix.publication import LIVE, Relations

if TYPE_CHECKING:
    import psycopg
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# as GENRE_SHARES of run_metrics.py: each user's shares add up to 1, every listener weighs the same
GENRE_SHARES = """
    select cast(genre_id as string) as genre_id,
           coalesce(sum(listen_share) / nullif(sum(sum(listen_share)) over (), 0), 0) as share
    from {features}
    group by genre_id"""


def record_spark_run_metrics(
    spark: SparkSession,
    conn: psycopg.Connection,
    run_id: str,
    thresholds: Thresholds,
    relations: Relations = LIVE,
) -> dict[str, float]:
    """Measure this run's figures on Spark and store them in Postgres (replacing the run's
    former ones); returns the row counts measured, by table."""
    volumes: dict[str, float] = {}
    for table in thresholds.volume_tables:
        if not spark.catalog.tableExists(relations(table)):
            log.info("run metrics: %s does not exist yet, not measured", relations(table))
            continue
        volumes[table] = float(spark.table(relations(table)).count())
    shares: list[tuple[str, float]] = []
    features = relations(t.USER_GENRE_FEATURES)
    if spark.catalog.tableExists(features):
        rows = spark.sql(GENRE_SHARES.format(features=features)).collect()
        shares = [(str(row["genre_id"]), float(row["share"])) for row in rows]
    ensure_run_metrics(conn)
    conn.execute(f"delete from {t.RUN_METRICS} where run_id = %s", (run_id,))
    insert = f"insert into {t.RUN_METRICS} (run_id, metric, subject, value) values (%s, %s, %s, %s)"
    conn.cursor().executemany(
        insert,
        [
            *((run_id, "rows", table, rows) for table, rows in volumes.items()),
            *((run_id, "genre_share", genre, share) for genre, share in shares),
        ],
    )
    return volumes

"""monitoring.run_metrics: the figures each run measures before validating (row counts, genre
shares) where the marts are, kept in Postgres under the tables' published names: the baselines
of the next successful run's day-over-day checks, whichever engine runs it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from expectations import tables as t
from expectations.engines import Engine
from expectations.thresholds import Thresholds
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    from expectations.spark_engine import SparkEngine

log = logging.getLogger(__name__)

# Each user's listen shares add up to 1: summed per genre and normalised, every listener weighs
# the same.
GENRE_SHARES = """
    select genre_id, coalesce(sum(listen_share) / nullif(sum(sum(listen_share)) over (), 0), 0)
        as share
    from {features}
    group by genre_id"""


def record_run_metrics(engine: Engine | SparkEngine, run_id: str, thresholds: Thresholds) -> None:
    """Measure and store (replacing) this run's figures."""
    rel = engine.relations
    present = engine.existing(rel(n) for n in (*thresholds.volume_tables, t.USER_GENRE_FEATURES))
    volumes: dict[str, float] = {}
    for table in thresholds.volume_tables:
        if rel(table) not in present:
            log.info("run metrics: %s does not exist yet, not measured", rel(table))
            continue
        volumes[table] = float(engine.rows(f"select count(*) as n from {rel(table)}")[0]["n"])
    features = rel(t.USER_GENRE_FEATURES)
    shares = engine.rows(GENRE_SHARES.format(features=features)) if features in present else []
    rows = [(run_id, "rows", table, n) for table, n in volumes.items()]
    rows += [(run_id, "genre_share", str(r["genre_id"]), float(r["share"])) for r in shares]
    with connect(engine.url) as conn:
        t.create_if_missing(conn, t.RUN_METRICS)
        conn.execute(f"delete from {t.RUN_METRICS} where run_id = %s", (run_id,))
        conn.cursor().executemany(
            f"insert into {t.RUN_METRICS} (run_id, metric, subject, value) values (%s, %s, %s, %s)",
            rows,
        )
    log.info("run metrics: %s", ", ".join(f"{k} {v:,.0f}" for k, v in volumes.items()) or "none")

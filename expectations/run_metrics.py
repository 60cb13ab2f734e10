"""monitoring.run_metrics: the figures each run measures before validating, so that the next run
can compare itself with them (day-over-day volumes, the genre-share distribution).

A run's figures are replaced when it validates again (idempotent). The day-over-day checks
compare with the latest *successful* run of the run ledger, so a failed run's figures (half the
users gone) never become tomorrow's baseline, and neither do those of a standalone validation.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from expectations import tables as t
from expectations.thresholds import Thresholds
from moovitamix.publication import LIVE, Relations
from moovitamix.warehouse import ensure_tables

log = logging.getLogger(__name__)

DDL = f"""
create table if not exists {t.RUN_METRICS} (
    run_id text not null,
    metric text not null,       -- 'rows' (subject: a table), 'genre_share' (subject: a genre)
    subject text not null,
    value double precision not null,
    measured_at timestamptz not null default now(),
    primary key (run_id, metric, subject)
);
comment on table {t.RUN_METRICS} is
    'Figures measured by each validation run (row counts, genre shares): the baselines of the '
    'day-over-day checks of the next run.';
"""

# The distribution of listens over genres: each user's listen shares add up to 1, so the sum
# per genre over all users, normalised, weighs every listening user equally.
GENRE_SHARES = sql.SQL(
    f"""
    insert into {t.RUN_METRICS} (run_id, metric, subject, value)
    select %(run_id)s, 'genre_share', genre_id,
           coalesce(sum(listen_share) / nullif(sum(sum(listen_share)) over (), 0), 0)
    from {{features}}
    group by genre_id
"""
)


def ensure_run_metrics(conn: psycopg.Connection) -> None:
    ensure_tables(conn, [t.RUN_METRICS], DDL)


def record_run_metrics(
    conn: psycopg.Connection, run_id: str, thresholds: Thresholds, relations: Relations = LIVE
) -> dict[str, float]:
    """Measure and store this run's figures; returns the row counts measured, by table.

    Figures are stored under the tables' published names ("marts.dim_users") even when the
    run measures its candidate (`relations`), so that runs compare with each other."""
    ensure_run_metrics(conn)
    conn.execute(f"delete from {t.RUN_METRICS} where run_id = %s", (run_id,))
    present = t.existing_tables(
        conn, [relations(name) for name in (*thresholds.volume_tables, t.USER_GENRE_FEATURES)]
    )
    volumes: dict[str, float] = {}
    for table in thresholds.volume_tables:
        if relations(table) not in present:
            log.info("run metrics: %s does not exist yet, not measured", relations(table))
            continue
        count = conn.execute(
            sql.SQL("select count(*) from {}").format(relations.identifier(table))
        ).fetchone()
        volumes[table] = float(count[0] if count else 0)
    conn.cursor().executemany(
        f"insert into {t.RUN_METRICS} (run_id, metric, subject, value) values (%s, 'rows', %s, %s)",
        [(run_id, table, rows) for table, rows in volumes.items()],
    )
    if relations(t.USER_GENRE_FEATURES) in present:
        conn.execute(
            GENRE_SHARES.format(features=relations.identifier(t.USER_GENRE_FEATURES)),
            {"run_id": run_id},
        )
    return volumes

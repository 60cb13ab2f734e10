"""The warehouse tables the monitoring layer reads, named in one place; a way to ask which of
them exist (a suite whose tables are not there yet is skipped, not failed); and the creation of
its own tables from sql/<table>.sql."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg

from moovitamix.warehouse import ensure_tables

SQL_DIR = Path(__file__).resolve().parent / "sql"

# raw (dlt): scd2 tables
RAW_TRACKS = "raw.tracks"
RAW_USERS = "raw.users"
RAW_LISTEN_HISTORY = "raw.listen_history"
RAW_TABLES = {"tracks": RAW_TRACKS, "users": RAW_USERS, "listen_history": RAW_LISTEN_HISTORY}
RAW_LISTEN_HISTORY_ITEMS = "raw.listen_history__items"
RAW_REJECTED = "raw._rejected"  # the quarantine

# marts (dbt)
DIM_USERS = "marts.dim_users"
DIM_TRACKS = "marts.dim_tracks"
FCT_LISTENS = "marts.fct_listens"
FCT_ORPHANED_LISTENS = "marts.fct_orphaned_listens"
USER_GENRE_FEATURES = "marts.user_genre_features"

# recommendations (ml)
USER_TOP_TRACKS = "recommendations.user_top_tracks"
SIMILAR_TRACKS = "recommendations.similar_tracks"
LIST_OWNERS = {USER_TOP_TRACKS: "user_id", SIMILAR_TRACKS: "track_id"}  # whose list a row is

# monitoring
INGESTION_STATS = "monitoring.ingestion_stats"  # written by ingestion
PIPELINE_RUNS = "monitoring.pipeline_runs"  # the run ledger (moovitamix.run_ledger)
RUN_METRICS = "monitoring.run_metrics"  # ours: per-run figures for day-over-day checks
CHECK_METRICS = "monitoring.check_metrics"  # ours: each check's metric per subject per run
VALIDATION_RESULTS = "monitoring.validation_results"  # ours: one row per expectation per run


def existing_tables(conn: psycopg.Connection, tables: Iterable[str]) -> set[str]:
    """The ones of `tables` ("schema.table") that exist in the warehouse."""
    query = "select name from unnest(%s::text[]) as name where to_regclass(name) is not null"
    return {name for (name,) in conn.execute(query, (sorted(set(tables)),))}


def create_if_missing(conn: psycopg.Connection, table: str) -> None:
    """One file per table: its DDL runs only while it is missing (a comment needs the owner)."""
    ensure_tables(conn, [table], (SQL_DIR / f"{table.split('.')[1]}.sql").read_text("utf-8"))

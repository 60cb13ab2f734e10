"""A small warehouse in the shapes the monitoring layer reads, consistent with itself (a clean
one passes every check), and the ways to break it that each check must catch.

raw tables as dlt's scd2 leaves them (current version: _dlt_valid_to null), ingestion_stats as
ingestion writes it (its own DDL), the run ledger through moovitamix.run_ledger, marts and
recommendations with the columns the checks read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from ingestion.stats import DDL as INGESTION_STATS_DDL
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_ledger import RunLedger

GENRES = ("rock", "pop", "jazz", "hip-hop", "techno")

RAW_DDL = """
create table raw.users (
    id bigint not null, first_name text, last_name text, email text, gender text,
    favorite_genres text, created_at timestamptz, updated_at timestamptz,
    record_hash text, _dlt_load_id text, _dlt_id text,
    _dlt_valid_from timestamptz, _dlt_valid_to timestamptz
);
create table raw.tracks (
    id bigint not null, name text, artist text, songwriters text, duration text, genres text,
    album text, created_at timestamptz, updated_at timestamptz,
    record_hash text, _dlt_load_id text, _dlt_id text,
    _dlt_valid_from timestamptz, _dlt_valid_to timestamptz
);
create table raw.listen_history (
    user_id bigint not null, item_count integer, created_at timestamptz, updated_at timestamptz,
    record_hash text, _dlt_load_id text, _dlt_id text,
    _dlt_valid_from timestamptz, _dlt_valid_to timestamptz
);
"""

MARTS_DDL = """
create table marts.dim_users (user_id bigint primary key, gender text);
create table marts.dim_tracks (track_id bigint primary key, duration_seconds integer);
create table marts.fct_listens (
    user_id bigint not null, track_id bigint not null, listen_count integer not null,
    primary key (user_id, track_id)
);
create table marts.fct_orphaned_listens (
    user_id bigint not null, track_id bigint not null, orphan_reason text not null,
    listen_count integer not null, primary key (user_id, track_id)
);
create table marts.user_genre_features (
    user_id bigint not null, genre_id text not null, listen_count integer not null,
    listen_share double precision not null, primary key (user_id, genre_id)
);
"""

# what the suppression check reads besides (moovitamix/roles.sql, dlt's tables): none suppressed
PRIVACY_DDL = """
create table raw.listen_history__items (
    record_hash text, user_id bigint, position integer, track_id bigint, _dlt_load_id text
);
create table raw._rejected (
    endpoint text, page integer, record_key text, payload text, reason text, run_id text,
    rejected_at timestamptz, _dlt_load_id text
);
create table privacy.salt (singleton boolean primary key default true, salt bytea not null);
insert into privacy.salt (salt) values ('\\x00112233');
create table privacy.suppressions (
    subject_hash text primary key, kind text not null, request_id bigint not null,
    suppressed_at timestamptz not null default now()
);
"""

RECOMMENDATIONS_DDL = """
create table recommendations.user_top_tracks (
    user_id bigint not null, rank integer not null, track_id bigint not null,
    score double precision not null, source text not null, model_run_id text not null,
    generated_at timestamptz not null, primary key (user_id, rank)
);
create table recommendations.similar_tracks (
    track_id bigint not null, rank integer not null, similar_track_id bigint not null,
    score double precision not null, model_run_id text not null,
    generated_at timestamptz not null, primary key (track_id, rank)
);
"""


@dataclass(frozen=True)
class Sizes:
    users: int = 200
    tracks: int = 100
    listens_per_user: int = 5


def _raw(conn: psycopg.Connection, sizes: Sizes) -> None:
    conn.execute(RAW_DDL)
    conn.execute(PRIVACY_DDL)
    past = "now() - interval '30 days'"
    conn.execute(
        f"""
        insert into raw.users (id, first_name, last_name, email, gender, favorite_genres,
                               created_at, updated_at, record_hash, _dlt_load_id,
                               _dlt_valid_from, _dlt_valid_to)
        select g, 'Ann', 'Lee', 'user' || g || '@example.net', 'Female', 'Rock',
               {past}, {past}, md5(g::text), '1', {past}, null
        from generate_series(1, %(n)s) as g
        """,
        {"n": sizes.users},
    )
    # an old version, retired: never a current row
    conn.execute(
        f"""insert into raw.users (id, email, created_at, updated_at, _dlt_valid_from,
                                  _dlt_valid_to)
            values (1, 'not an email', {past}, {past}, {past}, now() - interval '1 day')"""
    )
    conn.execute(
        f"""
        insert into raw.tracks (id, name, artist, duration, genres, created_at, updated_at,
                                record_hash, _dlt_load_id, _dlt_valid_from, _dlt_valid_to)
        select g, 'song', 'artist', lpad((g %% 60)::text, 2, '0') || ':' || '07', 'rock',
               {past}, {past}, md5(g::text), '1', {past}, null
        from generate_series(1, %(n)s) as g
        """,
        {"n": sizes.tracks},
    )
    conn.execute(
        f"""
        insert into raw.listen_history (user_id, item_count, created_at, updated_at,
                                        record_hash, _dlt_load_id, _dlt_valid_from,
                                        _dlt_valid_to)
        select g, %(k)s, {past}, {past}, md5(g::text), '1', {past}, null
        from generate_series(1, %(n)s) as g
        """,
        {"n": sizes.users, "k": sizes.listens_per_user},
    )


def ingestion_stats(
    conn: psycopg.Connection,
    run_id: str,
    *,
    started_at: datetime,
    totals: dict[str, int],
    rejected: dict[str, int] | None = None,
    retries: dict[str, int] | None = None,
    requests: int = 10,
    status: str = "loaded",
) -> None:
    conn.execute(INGESTION_STATS_DDL)
    for endpoint, total in totals.items():
        n_rejected = (rejected or {}).get(endpoint, 0)
        n_retries = (retries or {}).get(endpoint, 0)
        conn.execute(
            """
            insert into monitoring.ingestion_stats (
                run_id, endpoint, status, load_id, api_total, pages, records, rejected,
                rejected_by_reason, requests, retries, http_errors, bytes, rereads, new_fields,
                carried_forward, seconds, started_at, finished_at)
            values (%s, %s, %s, '1', %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, 0, %s, %s, %s)
            """,
            (
                run_id, endpoint, status, total, max(1, total // 100), total, n_rejected,
                Jsonb({"bad email": n_rejected} if n_rejected else {}),
                requests + n_retries,
                Jsonb({"http_429": n_retries} if n_retries else {}),
                Jsonb({"429": n_retries} if n_retries else {}),
                total * 200, Jsonb({}), 1.5, started_at, started_at + timedelta(seconds=2),
            ),
        )  # fmt: skip


def _marts(conn: psycopg.Connection, sizes: Sizes) -> None:
    conn.execute(MARTS_DDL)
    conn.execute(
        "insert into marts.dim_users select id, gender from raw.users where _dlt_valid_to is null"
    )
    conn.execute(
        "insert into marts.dim_tracks select g, 60 from generate_series(1, %s) as g",
        (sizes.tracks,),
    )
    conn.execute(
        """
        insert into marts.fct_listens
        select u.user_id, 1 + (u.user_id * 7 + k * 13) %% %(tracks)s, 1
        from marts.dim_users as u cross join generate_series(1, %(k)s) as k
        on conflict do nothing
        """,
        {"tracks": sizes.tracks, "k": sizes.listens_per_user},
    )
    conn.execute("insert into marts.fct_orphaned_listens values (1, 999999, 'unknown_track', 1)")
    conn.execute(
        """
        insert into marts.user_genre_features
        select u.user_id, g.genre_id, 1,
               case when g.genre_id = %(first)s then 0.6 else 0.1 end
        from marts.dim_users as u cross join unnest(%(genres)s::text[]) as g (genre_id)
        """,
        {"first": GENRES[0], "genres": list(GENRES)},
    )


def recommendations(conn: psycopg.Connection) -> None:
    conn.execute(RECOMMENDATIONS_DDL)
    conn.execute(
        """
        insert into recommendations.user_top_tracks
        select user_id, 1, 1, 0.5, 'model', 'model-1', now() from marts.dim_users
        """
    )
    conn.execute(
        """
        insert into recommendations.similar_tracks
        select track_id, 1, 1 + track_id % 7, 0.5, 'model-1', now() from marts.dim_tracks
        """
    )


def ledger_run(url: ConnectionURL, run_id: str, started_at: datetime, status: str) -> None:
    """A run in monitoring.pipeline_runs, as the daily orchestrator leaves it."""
    ledger = RunLedger(url, run_id)
    ledger.ensure_tables()
    ledger.start_run(source="test", warehouse="test")
    if status != "running":
        ledger.finish_run(failed_step="ingest" if status == "failed" else None)
    with psycopg.connect(url.url()) as conn:
        conn.execute(
            "update monitoring.pipeline_runs set started_at = %s, "
            "finished_at = %s + interval '3 minutes' where run_id = %s",
            (started_at, started_at, run_id),
        )


def seed_clean(url: ConnectionURL, run_id: str, sizes: Sizes = Sizes()) -> None:
    """A warehouse every check passes on, with `run_id` ingested and running now."""
    with psycopg.connect(url.url()) as conn:
        _raw(conn, sizes)
        ingestion_stats(
            conn,
            run_id,
            started_at=datetime.now(UTC) - timedelta(minutes=5),
            totals={"users": sizes.users, "tracks": sizes.tracks, "listen_history": sizes.users},
        )
        _marts(conn, sizes)
        recommendations(conn)
    ledger_run(url, run_id, datetime.now(UTC) - timedelta(minutes=5), "running")

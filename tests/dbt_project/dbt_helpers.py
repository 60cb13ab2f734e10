"""The dbt tests' scenario: what a warehouse goes through in two days, recorded for the tests.

1. day 0: the real ingestion loads the simulator into raw; dbt build with unit tests;
2. an incomplete load (rows whose load is not completed) lands in raw; dbt build again: nothing
   may change (idempotent, and incomplete loads are invisible);
3. the simulator moves to day 1 (new, edited, deleted users and tracks, grown histories); the
   ingestion loads it, and a hand-made completed load edits one track (an unparsable duration,
   an unknown genre); dbt build: only what changed moves;
4. fct_listens is rebuilt from scratch: it must equal the incremental result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from dbt_project.results import BuildResult
from dbt_project.runner import run_build
from ingestion.config import IngestionConfig
from ingestion.pipeline import IngestionResult, run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings
from moovitamix.warehouse import open_warehouse

INGESTION_CONFIG = IngestionConfig(concurrency=4, progress=False)
MARTS = (
    "dim_genres",
    "dim_users",
    "dim_users_pii",
    "dim_tracks",
    "bridge_track_genres",
    "bridge_user_favorite_genres",
    "fct_listens",
    "fct_orphaned_listens",
    "user_genre_features",
    "track_popularity",
    "dim_users_history",
    "dim_tracks_history",
)
INCOMPLETE_TRACK_ID = 990_000_001
INCOMPLETE_USER_ID = 990_000_002
LISTEN_COLUMNS = (
    "user_id, track_id, listen_count, first_seen_at, last_seen_at, positions, listened_at, "
    "history_record_hash"
)


@dataclass
class Day:
    run_id: str
    build: BuildResult
    seconds: float
    digests: dict[str, str]
    listens: dict[tuple[int, int], tuple]  # fct_listens rows with run_id last
    histories: dict[int, str]  # user_id -> current listen history record_hash
    api: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ingestion: IngestionResult | None = None


@dataclass
class Scenario:
    url: ConnectionURL
    api_url: str
    target: Path
    day1: Day
    rebuild: Day
    day2: Day
    edited_track_id: int
    full_refresh: BuildResult
    listens_full_refresh: dict[tuple[int, int], tuple]

    def query(self, statement: str, params: Any = None) -> list[tuple]:
        return query(self.url, statement, params)


def query(url: ConnectionURL, statement: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(url.url()) as conn:
        return conn.execute(statement, params).fetchall()


def fetch_all(api_url: str, endpoint: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with httpx.Client(base_url=api_url, timeout=30) as client:
        page = 1
        while items := client.get(f"/{endpoint}", params={"page": page, "size": 100}).json()[
            "items"
        ]:
            records.extend(items)
            page += 1
    return records


def api_snapshot(api_url: str) -> dict[str, list[dict[str, Any]]]:
    return {e: fetch_all(api_url, e) for e in ("tracks", "users", "listen_history")}


def set_day(api_url: str, day: int) -> None:
    httpx.post(f"{api_url}/_admin/state", json={"day": day}, timeout=120).raise_for_status()


def ingest(api_url: str) -> IngestionResult:
    return run_ingestion(load_settings(), new_run_id(), api_url=api_url, config=INGESTION_CONFIG)


def marts_digests(url: ConnectionURL) -> dict[str, str]:
    """A content hash of every mart (row order independent)."""
    digests = {}
    for table in MARTS:
        rows = query(
            url,
            f"select md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) "
            f"from marts.{table} as t",
        )
        digests[table] = rows[0][0]
    return digests


def listens(url: ConnectionURL) -> dict[tuple[int, int], tuple]:
    rows = query(url, f"select {LISTEN_COLUMNS}, run_id from marts.fct_listens")
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def histories(url: ConnectionURL) -> dict[int, str]:
    rows = query(url, "select user_id, record_hash from staging.stg_moovitamix__listen_history")
    return dict(rows)


def build(url: ConnectionURL, *, unit_tests: bool = False, **kwargs: Any) -> Day:
    run_id = new_run_id()
    started = time.monotonic()  # clock: the build's duration, reported, never asserted
    settings = load_settings()
    result = run_build(
        settings, run_id, open_warehouse(settings), exclude_unit_tests=not unit_tests, **kwargs
    )
    seconds = time.monotonic() - started  # clock: as above
    assert result.success, result.summary() + "\n" + result.table()
    return Day(run_id, result, seconds, marts_digests(url), listens(url), histories(url))


def add_incomplete_load(url: ConnectionURL) -> None:
    """Versions of a load that never completed (no _dlt_loads row) and of a failed one."""
    with psycopg.connect(url.url()) as conn:
        conn.execute(
            "insert into raw._dlt_loads (load_id, schema_name, status, inserted_at) "
            "values ('failed-load', 'moovitamix', 1, now())"
        )
        conn.execute(
            "insert into raw.tracks (id, name, artist, songwriters, duration, genres, album,"
            " created_at, updated_at, record_hash, _dlt_id, _dlt_load_id, _dlt_valid_from)"
            " values (%s, 'ghost', 'Nobody', 'Nobody', '03:00', 'Rock', 'none', now(), now(),"
            " 'ghost-track', 'ghost-track', 'unfinished-load', now())",
            (INCOMPLETE_TRACK_ID,),
        )
        conn.execute(
            "insert into raw.users (id, first_name, last_name, email, gender, favorite_genres,"
            " created_at, updated_at, record_hash, _dlt_id, _dlt_load_id, _dlt_valid_from)"
            " values (%s, 'Ghost', 'User', 'ghost@example.com', 'Male', 'Rock', now(), now(),"
            " 'ghost-user', 'ghost-user', 'failed-load', now())",
            (INCOMPLETE_USER_ID,),
        )


def remove_incomplete_load(url: ConnectionURL) -> None:
    with psycopg.connect(url.url()) as conn:
        conn.execute("delete from raw.tracks where _dlt_load_id = 'unfinished-load'")
        conn.execute("delete from raw.users where _dlt_load_id = 'failed-load'")
        conn.execute("delete from raw._dlt_loads where load_id = 'failed-load'")


def edit_one_track(url: ConnectionURL) -> int:
    """A completed load (as dlt writes one) that gives a track an unparsable duration and a
    genre text with an unknown genre and the "/" separator. Returns the track id."""
    with psycopg.connect(url.url()) as conn:
        load_id = f"{time.time():.6f}"  # clock: dlt's load ids are timestamps
        row = conn.execute(
            "select min(id), clock_timestamp() from raw.tracks where _dlt_valid_to is null"
        ).fetchone()
        assert row is not None
        track_id, boundary = row
        conn.execute(
            "update raw.tracks set _dlt_valid_to = %s where id = %s and _dlt_valid_to is null",
            (boundary, track_id),
        )
        conn.execute(
            "insert into raw.tracks (id, name, artist, songwriters, duration, genres, album,"
            " created_at, updated_at, record_hash, _dlt_id, _dlt_load_id, _dlt_valid_from)"
            " select id, name, artist, songwriters, 'abc', 'Polka / rock', album, created_at,"
            " updated_at, md5(random()::text), md5(random()::text), %s, %s"
            " from raw.tracks where id = %s and _dlt_valid_to = %s",
            (load_id, boundary, track_id, boundary),
        )
        conn.execute(
            "insert into raw._dlt_loads (load_id, schema_name, status, inserted_at) "
            "values (%s, 'moovitamix', 0, clock_timestamp())",
            (load_id,),
        )
    return track_id


def run_scenario(url: ConnectionURL, api_url: str, target: Path) -> Scenario:
    api_day0 = api_snapshot(api_url)
    ingestion_day0 = ingest(api_url)
    day1 = build(url, unit_tests=True)
    day1.api, day1.ingestion = api_day0, ingestion_day0

    add_incomplete_load(url)
    rebuild = build(url)
    remove_incomplete_load(url)

    set_day(api_url, 1)
    api_day1 = api_snapshot(api_url)
    ingestion_day1 = ingest(api_url)
    edited = edit_one_track(url)
    day2 = build(url)
    day2.api, day2.ingestion = api_day1, ingestion_day1

    settings = load_settings()
    full = run_build(
        settings, new_run_id(), open_warehouse(settings), select="fct_listens", full_refresh=True
    )
    assert full.success, full.summary()
    return Scenario(
        url=url,
        api_url=api_url,
        target=target,
        day1=day1,
        rebuild=rebuild,
        day2=day2,
        edited_track_id=edited,
        full_refresh=full,
        listens_full_refresh=listens(url),
    )

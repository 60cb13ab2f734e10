"""The dbt tests' scenario: what a warehouse goes through in two days, recorded for the tests.

1. day 0: the real ingestion loads the simulator into raw; dbt build with unit tests;
2. an incomplete load (rows whose load is not completed) lands in raw; dbt build again: nothing
   may change (idempotent, and incomplete loads are invisible);
3. the simulator moves to day 1 (new, edited, deleted users and tracks, grown histories); the
   ingestion loads it, and a hand-made completed load edits one track (an unparsable duration,
   an unknown genre); dbt build: only what changed moves;
4. fct_listens is rebuilt from scratch: it must equal the incremental result;
5. the swap's other schema (`marts_candidate`, its fct_listens built on day 0 after step 2) is
   built incrementally after hand-made completed loads that delete a track, change a history
   without growing it (its first listen dropped) and delete a user (their history stays); then
   after one that serves the track again (its listens, orphans, become valid with no history
   change). Each time the result must equal a full rebuild (in `marts_check`). The marts stay
   as step 4 left them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from dbt_project.rebuild import REBUILD_ENV, changed_share
from dbt_project.results import BuildResult
from dbt_project.runner import run_build
from ingestion.config import IngestionConfig
from ingestion.pipeline import IngestionResult, run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import TRANSFORMER
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings, temporary_env
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
# the swap's other schema (a table two builds old), and where the full rebuilds go
GAP_SCHEMA = "marts_candidate"
CHECK_SCHEMA = "marts_check"
LISTEN_MODELS = ["dim_genres", "dim_users", "dim_tracks", "fct_listens"]
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
class GapDay:
    """An incremental build of the candidate's fct_listens, and a full rebuild to compare."""

    build: BuildResult
    listens: dict[tuple[int, int], tuple]
    full_refresh: dict[tuple[int, int], tuple]
    rebuilt_users: set[int]  # the users whose rows the build had to rewrite


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
    day2_changed_share: float | None  # measured before day 2's build, as the transform step does
    rebuilt: BuildResult  # fct_listens built again with the transform step's rebuild switch
    listens_rebuilt: dict[tuple[int, int], tuple]
    gap_days: list[GapDay] = field(default_factory=list)
    deleted_track_id: int = 0
    shrunk_user_id: int = 0
    deleted_user_id: int = 0

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


def listens(url: ConnectionURL, schema: str = "marts") -> dict[tuple[int, int], tuple]:
    rows = query(url, f"select {LISTEN_COLUMNS}, run_id from {schema}.fct_listens")
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


def build_listens(schema: str, *, full_refresh: bool = False) -> BuildResult:
    """fct_listens and the dimensions it reads, into `schema`, with their own tests (not those
    that also read marts left out here)."""
    settings = load_settings()
    os.environ["DBT_INDIRECT_SELECTION"] = "cautious"
    try:
        result = run_build(
            settings,
            new_run_id(),
            open_warehouse(settings),
            select=LISTEN_MODELS,
            full_refresh=full_refresh,
            marts_schema=schema,
        )
    finally:
        del os.environ["DBT_INDIRECT_SELECTION"]
    assert result.success, result.summary() + "\n" + result.table()
    return result


def gap_day(url: ConnectionURL, rebuilt_users: set[int]) -> GapDay:
    build = build_listens(GAP_SCHEMA)
    incremental = listens(url, GAP_SCHEMA)
    build_listens(CHECK_SCHEMA, full_refresh=True)
    return GapDay(build, incremental, listens(url, CHECK_SCHEMA), rebuilt_users)


def _completed_load(conn: psycopg.Connection) -> tuple[str, Any]:
    """A load id and its boundary; the load completes when `_finish_load` registers it."""
    row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    return f"{time.time():.6f}", row[0]


def _finish_load(conn: psycopg.Connection, load_id: str) -> None:
    conn.execute(
        "insert into raw._dlt_loads (load_id, schema_name, status, inserted_at) "
        "values (%s, 'moovitamix', 0, clock_timestamp())",
        (load_id,),
    )


CURRENT_ITEMS = (
    "select items.user_id, items.position, items.track_id from raw.listen_history__items as items"
    " join raw.listen_history as h on h.user_id = items.user_id"
    " and h.record_hash = items.record_hash and h._dlt_valid_to is null"
)


def delete_track_change_history_delete_user(url: ConnectionURL) -> tuple[int, int, int]:
    """One completed load: a track two or more users hold is deleted; a user's history loses its
    first listen (a new version, the others one position down); another user is deleted and
    their history stays. Returns (track, user with the changed history, deleted user)."""
    with psycopg.connect(url.url()) as conn:
        load_id, boundary = _completed_load(conn)
        track_id = conn.execute(
            f"select track_id from ({CURRENT_ITEMS}) as items"
            " where track_id in (select id from raw.tracks where _dlt_valid_to is null)"
            " group by track_id having count(distinct user_id) >= 2"
            " order by count(distinct user_id), track_id limit 1"
        ).fetchone()[0]  # type: ignore[index]
        users = conn.execute(
            f"select user_id from ({CURRENT_ITEMS}) as items"
            " where user_id in (select id from raw.users where _dlt_valid_to is null)"
            " group by user_id having count(*) >= 3 and bool_and(track_id <> %s)"
            " order by user_id limit 2",
            (track_id,),
        ).fetchall()
        (shrunk,), (deleted,) = users
        conn.execute(
            "update raw.tracks set _dlt_valid_to = %s where id = %s and _dlt_valid_to is null",
            (boundary, track_id),
        )
        conn.execute(
            "update raw.users set _dlt_valid_to = %s where id = %s and _dlt_valid_to is null",
            (boundary, deleted),
        )
        old_hash = conn.execute(
            "update raw.listen_history set _dlt_valid_to = %s"
            " where user_id = %s and _dlt_valid_to is null returning record_hash",
            (boundary, shrunk),
        ).fetchone()[0]  # type: ignore[index]
        new_hash = f"shrunk-{shrunk}"
        conn.execute(
            "insert into raw.listen_history (user_id, item_count, created_at, updated_at,"
            " record_hash, _dlt_id, _dlt_load_id, _dlt_valid_from)"
            " select user_id, item_count - 1, created_at, %s, %s, %s, %s, %s"
            " from raw.listen_history where user_id = %s and record_hash = %s",
            (boundary, new_hash, new_hash, load_id, boundary, shrunk, old_hash),
        )
        conn.execute(
            "insert into raw.listen_history__items"
            " (record_hash, user_id, position, track_id, _dlt_load_id)"
            " select %s, user_id, position - 1, track_id, %s from raw.listen_history__items"
            " where user_id = %s and record_hash = %s and position > 0",
            (new_hash, load_id, shrunk, old_hash),
        )
        _finish_load(conn, load_id)
    return track_id, shrunk, deleted


def serve_track_again(url: ConnectionURL, track_id: int) -> set[int]:
    """One completed load: the deleted track is served again (a new version). Returns the
    users whose current history holds it."""
    with psycopg.connect(url.url()) as conn:
        load_id, boundary = _completed_load(conn)
        conn.execute(
            "insert into raw.tracks (id, name, artist, songwriters, duration, genres, album,"
            " created_at, updated_at, record_hash, _dlt_id, _dlt_load_id, _dlt_valid_from)"
            " select id, name, artist, songwriters, duration, genres, album, created_at,"
            " updated_at, record_hash, md5(random()::text), %s, %s from raw.tracks"
            " where id = %s order by _dlt_valid_to desc limit 1",
            (load_id, boundary, track_id),
        )
        _finish_load(conn, load_id)
        rows = conn.execute(
            f"select distinct user_id from ({CURRENT_ITEMS}) as items where track_id = %s",
            (track_id,),
        ).fetchall()
    return {row[0] for row in rows}


def run_scenario(url: ConnectionURL, api_url: str, target: Path) -> Scenario:
    api_day0 = api_snapshot(api_url)
    ingestion_day0 = ingest(api_url)
    day1 = build(url, unit_tests=True)
    day1.api, day1.ingestion = api_day0, ingestion_day0

    add_incomplete_load(url)
    rebuild = build(url)
    remove_incomplete_load(url)
    build_listens(GAP_SCHEMA)  # the swap's other schema, built on day 0
    with psycopg.connect(url.url()) as conn:  # dbt's role may not create schemas
        conn.execute(f"create schema if not exists {CHECK_SCHEMA} authorization {TRANSFORMER}")

    set_day(api_url, 1)
    api_day1 = api_snapshot(api_url)
    ingestion_day1 = ingest(api_url)
    edited = edit_one_track(url)
    with psycopg.connect(url.url()) as conn:
        day2_changed_share = changed_share(conn, "marts")
    day2 = build(url)
    day2.api, day2.ingestion = api_day1, ingestion_day1

    settings = load_settings()
    full = run_build(
        settings, new_run_id(), open_warehouse(settings), select="fct_listens", full_refresh=True
    )
    assert full.success, full.summary()
    listens_full_refresh = listens(url)
    with temporary_env(REBUILD_ENV, "1"):  # an incremental build, rebuilt in full by its config
        rebuilt = run_build(settings, new_run_id(), open_warehouse(settings), select="fct_listens")
    assert rebuilt.success, rebuilt.summary()
    listens_rebuilt = listens(url)

    # the candidate: two builds old, after a track, a history and a user changed, then after
    # the track is back (its listens, orphans until then, become valid)
    track_id, shrunk, deleted = delete_track_change_history_delete_user(url)
    gap_days = [gap_day(url, set())]
    holders = serve_track_again(url, track_id)
    gap_days.append(gap_day(url, holders))
    return Scenario(
        url=url,
        api_url=api_url,
        target=target,
        day1=day1,
        rebuild=rebuild,
        day2=day2,
        edited_track_id=edited,
        full_refresh=full,
        listens_full_refresh=listens_full_refresh,
        day2_changed_share=day2_changed_share,
        rebuilt=rebuilt,
        listens_rebuilt=listens_rebuilt,
        gap_days=gap_days,
        deleted_track_id=track_id,
        shrunk_user_id=shrunk,
        deleted_user_id=deleted,
    )


WRITTEN_TWICE = "written-twice"  # the record_hash of a hand-made version written twice


def add_elements_written_twice(url: ConnectionURL) -> str:
    """One completed load with elements in raw twice: a copy of an element of the oldest load's
    (its version came with that load), and two elements of a new version at one position.
    Returns the load id."""
    with psycopg.connect(url.url()) as conn:
        load_id, _ = _completed_load(conn)
        oldest = "select min(load_id) from raw._dlt_loads where status = 0"
        copy = (
            "insert into raw.listen_history__items"
            " (record_hash, user_id, position, track_id, _dlt_load_id)"
            " select {hash}, user_id, {position}, track_id, %s from raw.listen_history__items"
            f" where _dlt_load_id = ({oldest}) order by user_id, position limit 1"
        )
        conn.execute(copy.format(hash="record_hash", position="position"), (load_id,))
        for _ in range(2):
            conn.execute(copy.format(hash=f"'{WRITTEN_TWICE}'", position="0"), (load_id,))
        _finish_load(conn, load_id)
    return load_id


def remove_load(url: ConnectionURL, load_id: str) -> None:
    """Delete a hand-made load's elements and its `_dlt_loads` row."""
    with psycopg.connect(url.url()) as conn:
        conn.execute("delete from raw.listen_history__items where _dlt_load_id = %s", (load_id,))
        conn.execute("delete from raw._dlt_loads where load_id = %s", (load_id,))

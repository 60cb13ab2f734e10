"""Synthetic input marts with the simulator's structure, for the ML tests and bench/bench_ml.py.

It writes the five marts the recommender reads (`fct_listens`,
`dim_users`, `dim_tracks`, `bridge_track_genres`, `track_popularity`) with the shapes the dbt
project promises, filled like the simulator's realistic profile: Zipf-like track popularity
(weight = rank ** -0.75), 1-3 preferred genres per user (the first is the favorite), 80% of a
user's listens from their preferred genres weighted by popularity inside the genre, the rest
by global popularity, and lognormal listens per user (mean ~20, long tail). A few users have no
listens, and a few no favorite genre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

GENRE_WEIGHTS = np.array([13, 14, 12, 5, 9, 4, 5, 3, 6, 3, 4, 5, 3, 3, 6, 4, 2], dtype=float)
GENRES = tuple(f"genre_{i:02d}" for i in range(len(GENRE_WEIGHTS)))
PREFERRED_COUNT_SHARES = (0.3, 0.4, 0.3)
POSITION_CUTS = {1: (1.0, 1.0), 2: (0.7, 1.0), 3: (0.6, 0.85)}
T0, DAY = 1_767_225_600, 86_400  # 2026-01-01 UTC
START_DAYS, GAP_DAYS = 20, 0.5


@dataclass(frozen=True)
class SyntheticMarts:
    user_ids: np.ndarray  # int64
    favorite_genre: np.ndarray  # int code into GENRES, -1 = none
    preferred: np.ndarray  # (users, 3) genre codes, -1 padded
    track_ids: np.ndarray  # int64
    track_genre: np.ndarray  # (tracks, 2) genre codes, -1 padded
    listen_user: np.ndarray  # int64 user id per (user, track) pair
    listen_track: np.ndarray  # int64
    listen_count: np.ndarray  # int32
    # every listen in history order (positions 0.. per user), with its time (epoch seconds)
    event_user: np.ndarray | None = None  # int64 user id
    event_track: np.ndarray | None = None  # int64 track id
    event_at: np.ndarray | None = None  # int64


def generate(
    n_users: int,
    n_tracks: int,
    seed: int = 1,
    *,
    listens_log_mean: float = 2.6,
    listens_log_sigma: float = 0.9,
    preferred_share: float = 0.8,
    silent_share: float = 0.03,
    no_favorite_share: float = 0.03,
    clusters_per_genre: int = 1,
    cluster_share: float = 0.8,
    unheard_share: float = 0.03,
) -> SyntheticMarts:
    """Marts of n_users x n_tracks. `clusters_per_genre` > 1 adds taste the genres do not
    explain: each genre's tracks split into scenes, and a user's listens in a genre come mostly
    (`cluster_share`) from one scene of it, which only collaborative filtering can pick up.
    The default, 1, is the simulator's structure: genres and popularity, nothing more.
    `unheard_share` of the tracks are in the catalog but nobody has played them yet."""
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    genre_p = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()

    # ids are sparse and shuffled, like an API's: the code must not assume 0..n-1
    user_ids = np.sort(rng.choice(np.arange(1, n_users * 10 + 1), n_users, replace=False))
    track_ids = np.sort(rng.choice(np.arange(1, n_tracks * 10 + 1), n_tracks, replace=False))

    g1 = rng.choice(n_genres, n_tracks, p=genre_p)
    g2 = np.where(rng.random(n_tracks) < 0.4, rng.choice(n_genres, n_tracks, p=genre_p), -1)
    g2[g2 == g1] = -1
    popularity = np.empty(n_tracks)
    popularity[rng.permutation(n_tracks)] = np.arange(1, n_tracks + 1) ** -0.75
    popularity[rng.random(n_tracks) < unheard_share] = 0.0  # new tracks nobody has played

    n_pref = rng.choice([1, 2, 3], n_users, p=PREFERRED_COUNT_SHARES)
    preferred = np.full((n_users, 3), -1, dtype=np.int64)
    for count in (1, 2, 3):
        who = np.flatnonzero(n_pref == count)
        keys = rng.random((len(who), n_genres)) ** (1.0 / genre_p)  # weighted, no replacement
        preferred[who, :count] = np.argsort(-keys, axis=1)[:, :count]
    favorite = np.where(rng.random(n_users) < no_favorite_share, -1, preferred[:, 0])

    events = np.clip(
        np.round(rng.lognormal(listens_log_mean, listens_log_sigma, n_users)), 1, 2000
    ).astype(np.int64)
    events[rng.random(n_users) < silent_share] = 0
    owner = np.repeat(np.arange(n_users), events)
    total = len(owner)

    # which preferred genre each preferred listen uses
    cuts = np.array([POSITION_CUTS[c] for c in (1, 2, 3)])[n_pref[owner] - 1]
    r = rng.random(total)
    position = (r >= cuts[:, 0]).astype(np.int64) + (r >= cuts[:, 1])
    slot = np.minimum(position, n_pref[owner] - 1)
    genre = preferred[owner, slot]
    use_genre = rng.random(total) < preferred_share

    # (genre, track) memberships, each track also in one "scene" (cluster) of its genres
    member_genre = np.concatenate([g1, g2[g2 >= 0]])
    member_track = np.concatenate([np.arange(n_tracks), np.flatnonzero(g2 >= 0)])
    scene = rng.integers(0, clusters_per_genre, n_tracks)
    member_group = member_genre * clusters_per_genre + scene[member_track]

    # a preferred-genre listen comes from the user's scene of that genre (cluster_share of the
    # time, when there are scenes) or from the whole genre, weighted by popularity either way
    user_scene = rng.integers(0, clusters_per_genre, (n_users, 3))
    in_scene = use_genre & (rng.random(total) < cluster_share) & (clusters_per_genre > 1)
    group = genre * clusters_per_genre + user_scene[owner, slot]
    items = np.empty(total, dtype=np.int64)
    by_genre = use_genre & ~in_scene
    for mask, groups, member_groups, n_groups in (
        (by_genre, genre, member_genre, n_genres),
        (in_scene, group, member_group, n_genres * clusters_per_genre),
    ):
        picked, ok = _draw(rng, groups[mask], member_groups, member_track, popularity, n_groups)
        chosen = np.flatnonzero(mask)
        items[chosen[ok]] = picked[ok]
        use_genre[chosen[~ok]] = False  # an empty genre or scene: a global listen instead
    global_cum = np.cumsum(popularity)
    rest = ~use_genre
    target = rng.random(int(rest.sum())) * global_cum[-1]
    items[rest] = np.minimum(np.searchsorted(global_cum, target, side="right"), n_tracks - 1)

    keys, counts = np.unique(owner * n_tracks + items, return_counts=True)
    # a history spans days: each user starts within the first START_DAYS days, listens apart
    # by exponential gaps (GAP_DAYS on average), so a time split has users on both sides
    start = T0 + rng.uniform(0, START_DAYS * DAY, n_users).astype(np.int64)
    gaps = rng.exponential(GAP_DAYS * DAY, total).astype(np.int64)
    first = np.minimum(np.r_[0, np.cumsum(events)[:-1]], max(total - 1, 0))
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], events)
    return SyntheticMarts(
        user_ids=user_ids,
        favorite_genre=favorite,
        preferred=preferred,
        track_ids=track_ids,
        track_genre=np.stack([g1, g2], axis=1),
        listen_user=user_ids[keys // n_tracks],
        listen_track=track_ids[keys % n_tracks],
        listen_count=counts.astype(np.int32),
        event_user=user_ids[owner],
        event_track=track_ids[items],
        event_at=start[owner] + elapsed,
    )


def _draw(
    rng: np.random.Generator,
    wanted: np.ndarray,
    member_group: np.ndarray,
    member_track: np.ndarray,
    popularity: np.ndarray,
    n_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One track per entry of `wanted` (group ids), by popularity inside the group; returns
    (tracks, whether the group had any track)."""
    order = np.argsort(member_group, kind="stable")
    groups, tracks = member_group[order], member_track[order]
    cum = np.cumsum(popularity[tracks])
    low = np.concatenate([[0.0], cum])
    bounds = np.searchsorted(groups, np.arange(n_groups + 1))
    start, end = bounds[wanted], bounds[wanted + 1]
    ok = end > start
    target = low[start] + rng.random(len(wanted)) * (low[end] - low[start])
    picked = np.searchsorted(cum, target, side="right")
    picked = np.clip(picked, start, np.maximum(end - 1, start))
    return tracks[np.minimum(picked, len(tracks) - 1)], ok


MARTS_DDL = """
    drop table if exists marts.track_popularity, marts.fct_listens, marts.bridge_track_genres,
        marts.dim_tracks, marts.dim_users cascade;
    create table marts.dim_users (user_id bigint primary key, favorite_genre_id text);
    create table marts.dim_tracks (track_id bigint primary key, artist_name text);
    create table marts.bridge_track_genres (
        track_id bigint not null references marts.dim_tracks,
        genre_id text not null,
        primary key (track_id, genre_id)
    );
    create table marts.fct_listens (
        user_id bigint not null references marts.dim_users,
        track_id bigint not null references marts.dim_tracks,
        listen_count integer not null,
        first_seen_at timestamptz,
        last_seen_at timestamptz,
        positions integer[],
        listened_at timestamptz[],
        primary key (user_id, track_id)
    );
"""
POPULARITY_SQL = """
    create table marts.track_popularity as
    select t.track_id,
           coalesce(sum(f.listen_count), 0)::bigint as listen_count,
           count(f.user_id)::bigint as listener_count
    from marts.dim_tracks t left join marts.fct_listens f using (track_id)
    group by t.track_id
"""


def _copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> None:
    text = frame.to_csv(index=False, header=False, na_rep="")
    columns = ", ".join(frame.columns)
    with conn.cursor() as cur, cur.copy(f"copy {table} ({columns}) from stdin (format csv)") as cp:
        cp.write(text.encode("utf-8"))


def dim_tracks(marts: SyntheticMarts) -> dict[str, np.ndarray]:
    """Track ids with an artist name: five tracks per artist, in id order."""
    artists = np.array([f"artist {i // 5}" for i in range(len(marts.track_ids))], dtype=object)
    return {"track_id": marts.track_ids, "artist_name": artists}


def listen_rows(marts: SyntheticMarts) -> pd.DataFrame:
    """fct_listens' rows: one per (user, track) with the count, first and last listen, and
    the positions and times of its listens as Postgres array literals."""
    assert marts.event_user is not None and marts.event_track is not None
    events = pd.DataFrame(
        {
            "user_id": marts.event_user,
            "track_id": marts.event_track,
            "at": pd.to_datetime(marts.event_at, unit="s", utc=True),
        }
    )
    events["position"] = events.groupby("user_id").cumcount()
    events["stamp"] = events["at"].dt.strftime("%Y-%m-%d %H:%M:%S+00")
    grouped = events.groupby(["user_id", "track_id"], sort=True)
    rows = grouped.agg(
        listen_count=("position", "size"),
        first_seen_at=("stamp", "min"),
        last_seen_at=("stamp", "max"),
    )
    rows["positions"] = grouped["position"].agg(lambda p: "{" + ",".join(map(str, p)) + "}")
    rows["listened_at"] = grouped["stamp"].agg(lambda t: '{"' + '","'.join(t) + '"}')
    return rows.reset_index()


LISTENS_FROM_EVENTS = """
    insert into marts.fct_listens
    select user_id, track_id, count(*), min(listened_at), max(listened_at),
           array_agg(position order by position), array_agg(listened_at order by position)
    from listen_events
    group by user_id, track_id
"""


def _write_listens(conn: psycopg.Connection, marts: SyntheticMarts) -> None:
    """fct_listens from the listen events, aggregated by the server (as listen_rows reads them:
    positions per user in event order), so millions of listens load in one COPY."""
    assert marts.event_user is not None and marts.event_track is not None
    assert marts.event_at is not None
    conn.execute(
        "create temp table listen_events (user_id bigint, track_id bigint, position integer, "
        "listened_at timestamptz) on commit drop"
    )
    user = np.asarray(marts.event_user, dtype=np.int64)
    starts = np.r_[True, user[1:] != user[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(user)), 0))
    events = pd.DataFrame(
        {
            "user_id": user,
            "track_id": marts.event_track,
            "position": np.arange(len(user)) - first,
            "listened_at": pd.to_datetime(marts.event_at, unit="s", utc=True),
        }
    )
    for start in range(0, len(events), 2_000_000):
        _copy_frame(conn, "listen_events", events.iloc[start : start + 2_000_000])
    conn.execute(LISTENS_FROM_EVENTS)


def write_marts(conn: psycopg.Connection, marts: SyntheticMarts) -> None:
    """(Re)create the input marts and fill them with COPY, in the caller's transaction."""
    conn.execute(MARTS_DDL)
    names = np.array(GENRES, dtype=object)
    favorite = pd.Series(np.where(marts.favorite_genre >= 0, names[marts.favorite_genre], None))
    _copy_frame(
        conn,
        "marts.dim_users",
        pd.DataFrame({"user_id": marts.user_ids, "favorite_genre_id": favorite}),
    )
    _copy_frame(conn, "marts.dim_tracks", pd.DataFrame(dim_tracks(marts)))
    has = marts.track_genre >= 0
    pairs = pd.DataFrame(
        {
            "track_id": np.broadcast_to(marts.track_ids[:, None], has.shape)[has],
            "genre_id": names[marts.track_genre[has]],
        }
    )
    _copy_frame(conn, "marts.bridge_track_genres", pairs)
    _write_listens(conn, marts)
    conn.execute(POPULARITY_SQL)
    conn.execute("analyze marts.fct_listens")


# fct_listens' array literals (listen_rows, for Postgres' COPY) as the Spark types dbt builds
SPARK_LISTEN_COLUMNS = (
    "user_id",
    "track_id",
    "cast(listen_count as int) as listen_count",
    "to_timestamp(first_seen_at, 'yyyy-MM-dd HH:mm:ssx') as first_seen_at",
    "to_timestamp(last_seen_at, 'yyyy-MM-dd HH:mm:ssx') as last_seen_at",
    "transform(split(regexp_replace(positions, '[{}]', ''), ','), p -> cast(p as int)) "
    "as positions",
    "transform(split(regexp_replace(listened_at, '[{}\"]', ''), ','), "
    "t -> to_timestamp(t, 'yyyy-MM-dd HH:mm:ssx')) as listened_at",
)


def catalog_frames(marts: SyntheticMarts) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The users' favorite genres (user_id, genre; None: none) and the tracks' genres
    (track_id, genre): what ml.interactions.catalog_from_frames reads."""
    names = np.array(GENRES, dtype=object)
    favorite = np.where(marts.favorite_genre >= 0, names[marts.favorite_genre], None)
    has = marts.track_genre >= 0
    users = pd.DataFrame({"user_id": marts.user_ids, "genre": favorite})
    bridge = pd.DataFrame(
        {
            "track_id": np.broadcast_to(marts.track_ids[:, None], has.shape)[has],
            "genre": names[marts.track_genre[has]],
        }
    )
    return users, bridge


def spark_frames(marts: SyntheticMarts) -> dict[str, pd.DataFrame]:
    """The four input marts the recommender reads, as frames with the dbt project's columns:
    the same rows as `write_marts` (fct_listens' times and arrays still as Postgres text,
    typed by `write_spark_marts`)."""
    users, bridge = catalog_frames(marts)
    frames = {
        "dim_users": users.rename(columns={"genre": "favorite_genre_id"}),
        "dim_tracks": pd.DataFrame(dim_tracks(marts)),
        "bridge_track_genres": bridge.rename(columns={"genre": "genre_id"}),
        "fct_listens": listen_rows(marts),
    }
    return {
        name: frame.astype({c: "string" for c in frame if frame[c].dtype == object})
        for name, frame in frames.items()
    }


def write_spark_marts(spark: SparkSession, marts: SyntheticMarts, schema: str) -> None:
    """The input marts as Spark tables of database `schema` (the Spark engine's tests), with
    fct_listens' first_seen_at, last_seen_at (timestamp), positions (array<int>) and
    listened_at (array<timestamp>) as dbt-spark builds them."""
    spark.sql(f"create database if not exists {schema}")
    for name, frame in spark_frames(marts).items():
        written = spark.createDataFrame(frame)
        if name == "fct_listens":
            written = written.selectExpr(*SPARK_LISTEN_COLUMNS)
        written.write.mode("overwrite").saveAsTable(f"{schema}.{name}")

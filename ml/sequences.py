"""The marts as listening sequences for "play next": every listen of fct_listens as (user,
position, track, time) in history order (a packed binary COPY of the unnested arrays, read by
numpy without a Python step per row), and every dim_tracks track with its artist and genres
(for tracks nobody has played yet)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp
from psycopg import sql

from ml.interactions import (
    MARTS,
    NO_TIME,
    PACKED_BUCKETS,
    TRACK_GENRES_QUERY,
    UNIX_EPOCH_SINCE_2000,
    read_csv,
    read_packed,
)

log = logging.getLogger(__name__)

# As ml.interactions: the server unnests positions/listened_at and packs the listens into a
# few hundred bytea messages of fixed-width big-endian records. The messages are ranges of
# users (bounds: every n-th user of dim_users, whose ids fct_listens' hold) sent in order;
# the client sorts each message by user and position as it arrives, so the listens end in
# history order without a sort of them all on either side (the server's spilled to disk; a
# client's of 20M listens held several hundred MB more than the listens). Most (user, track)
# rows hold one listen: those are read as they are, and only the others go through unnest
# (a function call per row: most of the query's time).
PACKED_SEQUENCES_QUERY = sql.SQL("""
    copy (
        with {bounds_ctes}
        unnested as (
            select f.user_id, f.positions[1] as position, f.track_id, f.listened_at[1] as at
            from {fct_listens} as f
            where cardinality(f.positions) = 1 and cardinality(f.listened_at) = 1
            union all
            select f.user_id, u.position, f.track_id, u.listened_at as at
            from {fct_listens} as f
            cross join lateral unnest(f.positions, f.listened_at) as u(position, listened_at)
            where not (cardinality(f.positions) = 1 and cardinality(f.listened_at) = 1)
        ),
        listens as (
            select
                width_bucket(l.user_id, bounds.lower_bounds) as bucket,
                int8send(l.user_id::bigint) || int4send(l.position)
                    || int8send(l.track_id::bigint)
                    || coalesce(timestamptz_send(l.at), int8send({no_time}::bigint))
                    as record
            from unnested as l
            cross join bounds
            where l.position is not null
        )
        select string_agg(record, ''::bytea)
        from listens
        group by bucket
        order by bucket
    ) to stdout (format binary)
""")
# the messages' lower bounds: every n-th user of dim_users, numbered on the server (a scan of
# a million users in id order), or given by the caller who holds them already
SERVER_BOUNDS = sql.SQL("""
        numbered as (
            select
                user_id,
                row_number() over (order by user_id) - 1 as user_number,
                greatest(count(*) over () / {buckets}, 1) as step
            from {dim_users}
        ),
        bounds as (
            select array_agg(user_id order by user_id) as lower_bounds
            from numbered
            where user_number % step = 0
        ),""")
GIVEN_BOUNDS = sql.SQL("""
        bounds as (select {lower_bounds}::bigint[] as lower_bounds),""")
# The server holds every message while it packs them (a hash aggregate of each bucket's bytea,
# about the records' size: 28 bytes a listen); under the usual work_mem it spills them to disk
# and reads them back (ml/README.md). A cap for the read alone, used only as far as needed.
PACKING_MEMORY = "1GB"
SEQUENCE_RECORD = np.dtype(
    [("user_id", ">i8"), ("position", ">i4"), ("track_id", ">i8"), ("listened_at", ">i8")]
)
TRACKS_QUERY = (  # {}: dim_tracks
    "select track_id::bigint as track_id, lower(btrim(artist_name)) as artist "
    "from {} order by track_id"
)
NO_ARTIST = -1
TIME_CHUNK = 4_000_000  # listen times converted at once


@dataclass(frozen=True)
class Sequences:
    """Every listen, sorted by user then position (one user's history is one contiguous run)."""

    user_id: np.ndarray  # int64
    position: np.ndarray  # int32, 0-based position in the user's history
    track_id: np.ndarray  # int64
    listened_at: np.ndarray  # int64 epoch seconds (0 when unknown)

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True)
class TrackFeatures:
    """Every catalog track with what cold start ranks it by."""

    track_ids: np.ndarray  # int64, sorted: row -> track_id
    artist: np.ndarray  # int32 artist code per track, NO_ARTIST when unknown
    genres: sp.csr_matrix  # tracks x genres, 1 where the track has the genre
    genre_names: tuple[str, ...]  # genre code -> marts genre_id


def build_sequences(
    user_id: np.ndarray, position: np.ndarray, track_id: np.ndarray, listened_at: np.ndarray
) -> Sequences:
    """Sequences of listens given in any order."""
    user_id = np.asarray(user_id, dtype=np.int64)
    position = np.asarray(position, dtype=np.int32)
    order = np.lexsort((position, user_id))
    return Sequences(
        user_id=user_id[order],
        position=position[order],
        track_id=np.asarray(track_id, dtype=np.int64)[order],
        listened_at=np.asarray(listened_at, dtype=np.int64)[order],
    )


def rounded_epoch_seconds(micros: np.ndarray) -> np.ndarray:
    """Postgres binary timestamps (microseconds since 2000; NO_TIME: none) as epoch seconds
    rounded half away from zero (as extract(epoch from ...)::bigint), 0 for none; in place, a
    chunk at a time (no temporary as large as the listens)."""
    for start in range(0, len(micros), TIME_CHUNK):
        part = micros[start : start + TIME_CHUNK]  # a view
        none = part == NO_TIME
        part += UNIX_EPOCH_SINCE_2000 * 1_000_000
        negative = part < 0
        np.abs(part, out=part)
        part += 500_000
        np.floor_divide(part, 1_000_000, out=part)
        np.negative(part, out=part, where=negative)
        part[none] = 0
    return micros


def in_history_order(user_id: np.ndarray, position: np.ndarray, chunk: int = 4_000_000) -> bool:
    """Whether the listens are sorted by user, then position (checked a chunk at a time)."""
    last = len(user_id) - 1
    for start in range(0, max(last, 0), chunk):
        stop = min(start + chunk, last)
        a, b = slice(start, stop), slice(start + 1, stop + 1)
        later_user = user_id[b] > user_id[a]
        if not (later_user | ((user_id[b] == user_id[a]) & (position[b] >= position[a]))).all():
            return False
    return True


def message_bounds(user_ids: np.ndarray) -> list[int]:
    """The messages' lower bounds as the server numbers them: every n-th of the users (sorted,
    distinct: dim_users'), n = users // PACKED_BUCKETS (at least 1)."""
    step = max(len(user_ids) // PACKED_BUCKETS, 1)
    return np.asarray(user_ids, dtype=np.int64)[::step].tolist()


def load_sequences(
    conn: psycopg.Connection, schema: str = MARTS, user_ids: np.ndarray | None = None
) -> Sequences:
    """<schema>.fct_listens -> Sequences, one record per listen (unnested on the server).
    `user_ids`: <schema>.dim_users' (sorted), when the caller has them: the messages' bounds
    are then taken from them instead of numbering the users on the server (the same bounds;
    any increasing bounds would give the same sequences, only other messages)."""
    if user_ids is None:
        bounds = SERVER_BOUNDS.format(
            dim_users=sql.Identifier(schema, "dim_users"), buckets=sql.Literal(PACKED_BUCKETS)
        )
    else:
        bounds = GIVEN_BOUNDS.format(lower_bounds=sql.Literal(message_bounds(user_ids)))
    query = PACKED_SEQUENCES_QUERY.format(
        bounds_ctes=bounds,
        fct_listens=sql.Identifier(schema, "fct_listens"),
        no_time=sql.Literal(str(NO_TIME)),
    )
    with conn.transaction():  # the setting ends with it (or with the caller's transaction)
        conn.execute(sql.SQL("set local work_mem = {}").format(sql.Literal(PACKING_MEMORY)))
        columns = read_packed(conn, query, SEQUENCE_RECORD, sort_by=("user_id", "position"))
    columns["listened_at"] = rounded_epoch_seconds(columns["listened_at"])
    if not in_history_order(columns["user_id"], columns["position"]):  # not expected: sorted
        log.warning("%s.fct_listens' sequences arrived out of order: sorting them", schema)
        order = np.lexsort((columns["position"], columns["user_id"]))
        for name in columns:  # one column at a time: at most one extra column held
            columns[name] = columns[name][order]
        del order
    sequences = Sequences(
        user_id=columns["user_id"].astype(np.int64, copy=False),
        position=columns["position"].astype(np.int32, copy=False),
        track_id=columns["track_id"].astype(np.int64, copy=False),
        listened_at=columns["listened_at"].astype(np.int64, copy=False),
    )
    log.info("read %s.fct_listens as sequences: %s listens", schema, f"{len(sequences):,}")
    return sequences


def track_features(
    track_ids: np.ndarray, artists: pd.Series, genre_track_ids: np.ndarray, genres: pd.Series
) -> TrackFeatures:
    """TrackFeatures of tracks (sorted ids) with their artist names (None: unknown) and the
    (track, genre) pairs; pairs of tracks outside `track_ids` are dropped."""
    track_ids = np.asarray(track_ids, dtype=np.int64)
    artist_codes, _ = pd.factorize(pd.Series(artists, dtype="string"))  # NA -> -1
    names = sorted(set(pd.Series(genres, dtype="string").dropna()))
    code = {name: i for i, name in enumerate(names)}
    pair_tracks = np.asarray(genre_track_ids, dtype=np.int64)
    rows = np.minimum(np.searchsorted(track_ids, pair_tracks), max(len(track_ids) - 1, 0))
    keep = track_ids[rows] == pair_tracks if len(track_ids) else np.zeros(len(rows), dtype=bool)
    cols = pd.Series(genres, dtype="string").map(code).to_numpy(dtype=np.int64)[keep]
    matrix = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows[keep], cols)),
        shape=(len(track_ids), len(names)),
    )
    matrix.data[:] = 1.0  # a pair listed twice still counts once
    return TrackFeatures(track_ids, artist_codes.astype(np.int32), matrix, tuple(names))


def load_track_features(conn: psycopg.Connection, schema: str = MARTS) -> TrackFeatures:
    """Every <schema>.dim_tracks track with its artist (trimmed, case-folded) and genres."""
    tracks = read_csv(conn, TRACKS_QUERY, sql.Identifier(schema, "dim_tracks"))
    pairs = read_csv(conn, TRACK_GENRES_QUERY, sql.Identifier(schema, "bridge_track_genres"))
    return track_features(
        tracks["track_id"].to_numpy(dtype=np.int64),
        tracks["artist"],
        pairs["track_id"].to_numpy(dtype=np.int64),
        pairs["genre"],
    )

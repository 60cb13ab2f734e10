"""The marts as numpy: fct_listens as a users x tracks CSR matrix with its id maps and each
pair's first listen time (a packed binary COPY, no Python object per row), and the genres the
baselines need (CSV COPY, pandas)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp
from psycopg import sql

log = logging.getLogger(__name__)

# Postgres sends a COPY one message per row, and a Python step per message costs more than the
# whole transfer: so the server packs the rows into a few hundred big messages, each one bytea
# of fixed-width big-endian records (int8send/int4send), which numpy reads without a loop.
# `first_seen` is the pair's first listen in epoch seconds (0 when unknown: the oldest), sent
# as Postgres' own binary timestamp (microseconds since 2000, NO_TIME for none; epoch_seconds
# converts it): extract(epoch) makes a numeric per row, a fifth of the query's time.
PACKED_LISTENS_QUERY = sql.SQL("""
    copy (
        select string_agg(
            int8send(user_id::bigint) || int8send(track_id::bigint) || int4send(listen_count)
                || coalesce(timestamptz_send(first_seen_at), int8send({no_time}::bigint)),
            ''::bytea
        )
        from {fct_listens}
        where listen_count > 0
        group by user_id % {buckets}
    ) to stdout (format binary)
""")
NO_TIME = np.iinfo(np.int64).min  # (also -infinity, which extract(epoch) refused)
UNIX_EPOCH_SINCE_2000 = 946_684_800  # seconds from 1970-01-01 to 2000-01-01 (UTC)
MARTS = "marts"  # or the daily run's candidate schema before it is published: readers take it
# every mart training reads (the daily run starts training once these are built)
MARTS_READ = ("fct_listens", "dim_users", "dim_tracks", "bridge_track_genres")
PACKED_BUCKETS = 256
LISTEN_RECORD = np.dtype(
    [("user_id", ">i8"), ("track_id", ">i8"), ("listen_count", ">i4"), ("first_seen", ">i8")]
)
TRACK_GENRES_QUERY = (  # {}: bridge_track_genres
    "select distinct track_id::bigint as track_id, genre_id::text as genre "
    "from {} where genre_id is not null"
)
NO_GENRE = -1


class MartsNotReady(RuntimeError):
    """An input mart is missing or unusable; the message is one line."""


@dataclass(frozen=True)
class Interactions:
    """Listen counts: `matrix[row, col]` is how often user_ids[row] played track_ids[col];
    `first_seen[i]` is when the pair of `matrix.data[i]` was first heard (epoch seconds), an
    array aligned with the matrix's data (no second index: the lightest way to carry it)."""

    matrix: sp.csr_matrix  # float32, users x tracks, sorted indices
    user_ids: np.ndarray  # int64, sorted: row -> user_id
    track_ids: np.ndarray  # int64, sorted: col -> track_id
    first_seen: np.ndarray | None = None  # int64 epoch seconds per stored pair; None: unknown

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_tracks(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def n_interactions(self) -> int:
        return int(self.matrix.nnz)

    def sizes(self) -> dict[str, int]:
        """The ml.model_runs size columns."""
        return {name: getattr(self, name) for name in ("n_users", "n_tracks", "n_interactions")}

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id; -1 for users without listens."""
        return positions_of(self.user_ids, user_ids)

    def cols_of(self, track_ids: np.ndarray) -> np.ndarray:
        """Column of each track id; -1 for tracks nobody listened to."""
        return positions_of(self.track_ids, track_ids)


@dataclass(frozen=True)
class Catalog:
    """Who the users are and which genres tracks belong to, in the matrix's index space."""

    user_ids: np.ndarray  # int64: every user of marts.dim_users
    favorite_genre: np.ndarray  # int32 genre code per user, NO_GENRE when unknown
    genre_names: tuple[str, ...]  # genre code -> marts genre_id
    track_genres: sp.csr_matrix  # tracks (matrix columns) x genres, 1 where the track has it
    n_catalog_tracks: int  # rows of marts.dim_tracks: the coverage denominator

    def favorite_genre_of(self, user_ids: np.ndarray) -> np.ndarray:
        """The favorite genre code of each user (NO_GENRE: none, or not in dim_users)."""
        codes = np.append(self.favorite_genre, NO_GENRE).astype(np.int32)  # [-1]: unknown
        return codes[positions_of(self.user_ids, user_ids)]


def positions_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The index of each of `ids` in `sorted_ids`; -1 for ids it does not hold."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1)


def _codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(ids, return_inverse=True) with int32 codes: by a table of the id range when the
    ids are dense enough (database keys usually are: no sort of every pair), else np.unique."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return ids.copy(), np.zeros(0, dtype=np.int32)
    low, high = int(ids.min()), int(ids.max())
    if high - low > max(4 * len(ids), 1 << 20):  # sparse ids: a table would not pay
        unique, inverse = np.unique(ids, return_inverse=True)
        return unique, inverse.astype(np.int32).ravel()
    present = np.zeros(high - low + 1, dtype=bool)
    present[ids - low] = True
    code = np.cumsum(present, dtype=np.int32) - 1
    return np.flatnonzero(present) + low, code[ids - low]


def build_interactions(
    user_ids: np.ndarray,
    track_ids: np.ndarray,
    counts: np.ndarray,
    first_seen: np.ndarray | None = None,
) -> Interactions:
    """The CSR matrix and id maps of (user, track, count) triples, with each pair's first
    listen time when `first_seen` is given. A pair listed twice: counts summed, earliest time.
    Without repeated pairs (the marts have none) scipy's CSR build orders the pairs (its
    counting by row, then each row's columns sorted), not a sort of every pair's key."""
    users, rows = _codes(user_ids)
    del user_ids  # the caller may have handed over its last reference: let it go
    tracks, cols = _codes(track_ids)
    del track_ids
    shape = (len(users), len(tracks))
    # each pair's index as the data of the CSR build (which sums repeated pairs' entries)
    placed = sp.csr_matrix((np.arange(len(rows), dtype=np.int64), (rows, cols)), shape=shape)
    if placed.nnz != len(rows):  # a repeated pair: sum its counts, keep its earliest time
        del placed
        return _summing_repeats(users, tracks, rows, cols, counts, first_seen)
    del rows, cols
    placed.sort_indices()  # already sorted by the build's own summing; the flag says so
    order = placed.data
    data = np.asarray(counts, dtype=np.float32)[order]
    times = None if first_seen is None else np.asarray(first_seen, dtype=np.int64)[order]
    del order
    matrix = sp.csr_matrix((data, placed.indices, placed.indptr), shape=shape)
    matrix.has_sorted_indices = True
    return Interactions(matrix, users, tracks, times)


def _summing_repeats(
    users: np.ndarray,
    tracks: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    counts: np.ndarray,
    first_seen: np.ndarray | None,
) -> Interactions:
    """build_interactions with repeated pairs: one sort of every pair's (row, column) key."""
    width = max(len(tracks), 1)
    key = rows.astype(np.int64) * width + cols
    del rows, cols
    order = np.argsort(key)
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]][: len(key)])
    data = np.add.reduceat(np.asarray(counts, dtype=np.float32)[order], starts)
    times = None
    if first_seen is not None:
        times = np.minimum.reduceat(np.asarray(first_seen, dtype=np.int64)[order], starts)
    key = key[starts]
    indptr = np.searchsorted(key // width, np.arange(len(users) + 1))
    matrix = sp.csr_matrix(
        (data, (key % width).astype(np.int32), indptr), shape=(len(users), len(tracks))
    )
    return Interactions(matrix, users, tracks, times)


def check_marts(conn: psycopg.Connection, schema: str = MARTS) -> None:
    tables = list(MARTS_READ)
    found = conn.execute(
        "select table_name from information_schema.tables "
        "where table_schema = %s and table_name = any(%s)",
        (schema, tables),
    ).fetchall()
    missing = sorted(set(tables) - {name for (name,) in found})
    if missing:
        raise MartsNotReady(
            f"input mart(s) missing: {', '.join(f'{schema}.{m}' for m in missing)} "
            "(run the transform step first)"
        )


def load_interactions(conn: psycopg.Connection, schema: str = MARTS) -> Interactions:
    """<schema>.fct_listens -> Interactions, streamed with a binary COPY of packed records."""
    query = PACKED_LISTENS_QUERY.format(
        fct_listens=sql.Identifier(schema, "fct_listens"),
        buckets=sql.Literal(PACKED_BUCKETS),
        no_time=sql.Literal(str(NO_TIME)),
    )
    records = read_packed(conn, query, LISTEN_RECORD)
    records["first_seen"] = epoch_seconds(records["first_seen"])
    interactions = build_interactions(  # each column handed over: let go once used
        records.pop("user_id"),
        records.pop("track_id"),
        records.pop("listen_count"),
        records.pop("first_seen"),
    )
    log.info("read %s.fct_listens: %s", schema, interactions.sizes())
    return interactions


def packed_parts(
    conn: psycopg.Connection, query: sql.Composable, dtype: np.dtype
) -> Iterator[dict[str, np.ndarray]]:
    """Each bytea row of a COPY that packs records (as PACKED_LISTENS_QUERY) as native-endian
    columns, as it arrives."""
    names = dtype.names or ()
    with conn.cursor() as cur, cur.copy(query) as copy:
        copy.set_types(["bytea"])
        for (packed,) in copy.rows():
            records = np.frombuffer(packed, dtype=dtype)
            yield {
                name: records[name].astype(records[name].dtype.newbyteorder("=")) for name in names
            }
            del records, packed


def epoch_seconds(micros: np.ndarray) -> np.ndarray:
    """Postgres binary timestamps (microseconds since 2000; NO_TIME: none) as whole epoch
    seconds, floored (as floor(extract(epoch from ...))), 0 for none; in place."""
    none = micros == NO_TIME
    np.floor_divide(micros, 1_000_000, out=micros)
    micros += UNIX_EPOCH_SINCE_2000
    micros[none] = 0
    return micros


def read_packed(
    conn: psycopg.Connection,
    query: sql.Composable,
    dtype: np.dtype,
    sort_by: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """The records of a COPY that packs them into bytea rows (as PACKED_LISTENS_QUERY), as
    native-endian columns. Each message is split into its columns as it arrives and each
    column joined on its own, so the peak is about one copy of the data, not three. With
    `sort_by`, each message's records are then sorted by those fields (stable), in place: a
    sorted copy per message as it arrived left the heap fragmented (a few hundred MB more
    resident at 20M listens)."""
    names = dtype.names or ()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    lengths = []
    for native in packed_parts(conn, query, dtype):
        lengths.append(len(native[names[0]]) if names else 0)
        for name in names:
            parts[name].append(native.pop(name))
    columns = {}
    for name in names:
        native = dtype[name].newbyteorder("=")
        columns[name] = np.concatenate(parts.pop(name)) if parts[name] else np.empty(0, native)
    if sort_by:
        ends = np.cumsum(lengths, dtype=np.int64)
        for start, end in zip((ends - lengths).tolist(), ends.tolist(), strict=True):
            order = np.lexsort([columns[name][start:end] for name in reversed(sort_by)])
            for column in columns.values():
                column[start:end] = column[start:end][order]
    return columns


def read_csv(conn: psycopg.Connection, query: str, table: sql.Identifier) -> pd.DataFrame:
    """`query` on `table` (its `{}`) through a CSV COPY: an id column and strings."""
    statement = sql.SQL("copy (" + query + ") to stdout (format csv, header)").format(table)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        buffer = io.BytesIO(b"".join(copy))
    dtypes = {"user_id": "int64", "track_id": "int64", "genre": "string", "artist": "string"}
    return pd.read_csv(buffer, dtype=dtypes, keep_default_na=False, na_values=[""])


def load_catalog(
    conn: psycopg.Connection, interactions: Interactions, schema: str = MARTS
) -> Catalog:
    """Users with their favorite genre, and the genres of the tracks in the matrix."""
    users = read_users(conn, schema)
    bridge = read_csv(conn, TRACK_GENRES_QUERY, sql.Identifier(schema, "bridge_track_genres"))
    dim_tracks = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, "dim_tracks"))
    (n_catalog,) = conn.execute(dim_tracks).fetchone() or (0,)
    return catalog_from_frames(interactions, users, bridge, int(n_catalog))


USER_RECORD = np.dtype([("user_id", ">i8"), ("genre", ">i4")])


def read_users(conn: psycopg.Connection, schema: str = MARTS) -> pd.DataFrame:
    """<schema>.dim_users as (user_id, genre: the favorite genre id, NA for none or ''), by
    user id: the few distinct genres first, then each user packed with its genre's number
    among them (a CSV row per user was a Python step per user)."""
    table = sql.Identifier(schema, "dim_users")
    genre = sql.SQL("nullif(favorite_genre_id::text, '')")
    found = conn.execute(
        sql.SQL("select array_agg(distinct {}) from {}").format(genre, table)
    ).fetchone()
    names = [name for name in (found[0] if found and found[0] else []) if name is not None]
    query = sql.SQL(
        "copy (select string_agg(int8send(user_id::bigint) "
        "|| int4send(coalesce(array_position({}::text[], {}), 0)), ''::bytea) "
        "from {} group by user_id % {}) to stdout (format binary)"
    ).format(sql.Literal(names), genre, table, sql.Literal(PACKED_BUCKETS))
    users = read_packed(conn, query, USER_RECORD)
    order = np.argsort(users["user_id"], kind="stable")
    labels = np.array([None, *names], dtype=object)  # 0: none
    return pd.DataFrame(
        {
            "user_id": users["user_id"][order].astype(np.int64, copy=False),
            "genre": pd.array(labels[users["genre"][order]], dtype="string"),
        }
    )


def catalog_from_frames(
    interactions: Interactions, users: pd.DataFrame, bridge: pd.DataFrame, n_catalog: int
) -> Catalog:
    """The Catalog of `users` (user_id, genre: favorite genre id) and `bridge` (track_id,
    genre), however they were read (Postgres COPY, or Spark on the Spark engine)."""
    genre_names = sorted(set(bridge["genre"].dropna()) | set(users["genre"].dropna()))
    code = {name: i for i, name in enumerate(genre_names)}
    favorite = users["genre"].map(code).fillna(NO_GENRE).to_numpy(dtype=np.int32)
    cols = interactions.cols_of(bridge["track_id"].to_numpy(dtype=np.int64))
    keep = cols >= 0
    genre_codes = bridge["genre"].map(code).to_numpy(dtype=np.int64)[keep]
    track_genres = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (cols[keep], genre_codes)),
        shape=(interactions.n_tracks, len(genre_names)),
    )
    track_genres.data[:] = 1.0  # a pair listed twice still counts once
    return Catalog(
        user_ids=users["user_id"].to_numpy(dtype=np.int64),
        favorite_genre=favorite,
        genre_names=tuple(genre_names),
        track_genres=track_genres,
        n_catalog_tracks=int(n_catalog),
    )

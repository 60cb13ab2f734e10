"""Publishing: the new lists COPYed into `<table>__new` (`stage`), then renamed into place with
the model runs in the publish transaction of a run's publication (moovitamix/publication.py), so
readers see yesterday's whole tables or today's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ml.interactions import PACKED_BUCKETS, packed_parts, read_packed
from ml.lists import SOURCES, SimilarTracks, UserTopTracks
from ml.registry import ModelRun, ensure_model_runs, record_model_runs
from moovitamix.publication import Publication

log = logging.getLogger(__name__)

SCHEMA = "recommendations"
ROWS_PER_BLOCK = 250_000
# One stager at a time (two concurrent runs would otherwise race on the __new tables).
PUBLISH_LOCK_KEY = 0x6D76785F6D6C  # "mvx_ml"
PAIR = np.dtype([("user_id", ">i8"), ("track_id", ">i8")])


@dataclass(frozen=True)
class Table:
    name: str
    spec: str  # "column type, ..." in COPY order, every column not null
    comment: str

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(c.split(" ", 1)[0], c.split(" ", 1)[1]) for c in self.spec.split(", ")]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def staged(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, f"{self.name}__new")


RUN_COLUMNS = "model_run_id text, generated_at timestamptz"  # the run's two constants
USER_TOP_TRACKS = Table(
    "user_top_tracks",
    f"user_id bigint, rank integer, track_id bigint, score double precision, source text, "
    f"{RUN_COLUMNS}",
    "Daily top tracks per user (home screen), already-heard tracks excluded. source: 'model' "
    "(the family in ml.model_runs), the fallback used (genre_popularity, popularity), or "
    "'new_track' (a track nobody has heard yet, in the user's favorite genre). Written by "
    "ml/ (make train).",
)
SIMILAR_TRACKS = Table(
    "similar_tracks",
    f"track_id bigint, rank integer, similar_track_id bigint, score double precision, "
    f"{RUN_COLUMNS}",
    "Tracks to play next, for every catalog track, itself excluded: what listeners played "
    "after it (ml/play_next.py: transitions, session co-occurrence, a blend with item-item "
    "similarity; the model in ml.model_runs' test report), filled from the same artist and "
    "genre for tracks nobody has played. Written by ml/ (make train).",
)
TABLES = (USER_TOP_TRACKS, SIMILAR_TRACKS)


class PublishError(RuntimeError):
    """Publishing failed; yesterday's tables are untouched. The message is one line."""


Columns = Sequence[np.ndarray]  # one array per list column, before the run's two constants


def user_columns(lists: UserTopTracks) -> Columns:
    sources = np.asarray(SOURCES, dtype=object)[lists.source]
    return [lists.user_id, lists.rank, lists.track_id, lists.score, sources]


def similar_columns(lists: SimilarTracks) -> Columns:
    return [lists.track_id, lists.rank, lists.similar_track_id, lists.score]


def copy_rows(
    parts: Iterable[Columns], model_run_id: str, at: datetime
) -> Iterator[tuple[Any, ...]]:
    """The rows of each part's columns, block by block, with the run's two constants."""
    for columns in parts:
        for start in range(0, len(columns[0]), ROWS_PER_BLOCK):
            block = [column[start : start + ROWS_PER_BLOCK].tolist() for column in columns]
            yield from zip(*block, repeat(model_run_id), repeat(at))


def _load(
    conn: psycopg.Connection, table: Table, rows: Iterator[tuple[Any, ...]], keep: bool = False
) -> int:
    """`table`'s `__new` copy created, filled with psycopg's binary COPY (after the live
    table's rows, as they are, with `keep`), keyed and analysed."""
    new = table.staged
    columns = sql.SQL(", ").join(
        sql.SQL("{} {} not null").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in table.columns
    )
    names = sql.SQL(", ").join(map(sql.Identifier, table.names))
    conn.execute(sql.SQL("drop table if exists {}").format(new))
    conn.execute(sql.SQL("create table {} ({}, check (rank >= 1))").format(new, columns))
    kept = 0
    if keep:
        live = sql.Identifier(SCHEMA, table.name)
        query = sql.SQL("insert into {} ({}) select {} from {}").format(new, names, names, live)
        kept = conn.execute(query).rowcount
    copy_sql = sql.SQL("copy {} ({}) from stdin (format binary)").format(new, names)
    count = 0
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types([kind for _, kind in table.columns])
        for count, row in enumerate(rows, start=1):  # noqa: B007
            copy.write_row(row)
    conn.execute(
        sql.SQL("alter table {} add constraint {} primary key ({}, rank)").format(
            new, sql.Identifier(f"{table.name}__new_pkey"), sql.Identifier(table.names[0])
        )
    )
    conn.execute(sql.SQL("analyze {}").format(new))
    return kept + count


def _swap(conn: psycopg.Connection, table: Table) -> None:
    live = sql.Identifier(SCHEMA, table.name)
    conn.execute(sql.SQL("drop table if exists {}").format(live))
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(table.staged, sql.Identifier(table.name))
    )
    conn.execute(
        sql.SQL("alter index {} rename to {}").format(
            sql.Identifier(SCHEMA, f"{table.name}__new_pkey"),
            sql.Identifier(f"{table.name}_pkey"),
        )
    )
    conn.execute(sql.SQL("comment on table {} is {}").format(live, sql.Literal(table.comment)))


def stage(
    conn: psycopg.Connection,
    users: Iterable[Columns],
    similar: Iterable[Columns],
    *,
    model_run_id: str,
    generated_at: datetime,
    keep_similar: bool = False,
) -> dict[str, int]:
    """Write both lists (parts of columns: `user_columns`, `similar_columns`, `batch_columns`)
    into `recommendations.<table>__new` and commit; nothing live changes until `swap_in`.
    `keep_similar`: the live similar_tracks' rows are staged as they are (their model run and
    time), `similar` adds the lists of tracks they lack (play next kept: ml/README.md)."""
    if not conn.autocommit:
        raise ValueError("needs an autocommit connection: it runs its own transaction")
    ensure_model_runs(conn)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_KEY,))
        counts = {
            table.name: _load(
                conn,
                table,
                copy_rows(parts, model_run_id, generated_at),
                keep=keep_similar and table is SIMILAR_TRACKS,
            )
            for table, parts in zip(TABLES, (users, similar), strict=True)
        }
        if counts[USER_TOP_TRACKS.name] == 0:
            raise PublishError("refusing to publish an empty user_top_tracks")
    log.info("staged %s (model run %s)", counts, model_run_id)
    return counts


def batch_columns(batches: Iterable[pa.RecordBatch], table: Table) -> Iterator[Columns]:
    """Arrow batches of a list (trained in Spark) as parts for `stage`: one batch at a time."""
    names = table.names[:-2]  # the run's constants are added by copy_rows
    for batch in batches:
        yield [batch.column(name).to_numpy(zero_copy_only=False) for name in names]


def swap_in(
    conn: psycopg.Connection,
    model_run_id: str,
    model_runs: Sequence[ModelRun],
    kept_similar: Sequence[str] = (),
) -> dict[str, int]:
    """Inside the caller's transaction: put the lists staged for `model_run_id` in place of the
    live ones and record the model runs. Rows per table. Lists another run staged since (its
    stage replaced ours) are refused: never one run's lists with another's model runs.
    `kept_similar`: the model runs of the similar_tracks rows that were kept as they were."""
    conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_KEY,))  # vs a run staging
    counts: dict[str, int] = {}
    for table in TABLES:
        name = f"{SCHEMA}.{table.name}__new"
        if conn.execute("select to_regclass(%s)", (name,)).fetchone() == (None,):
            raise PublishError(f"no staged {name} to publish")
        ours = [model_run_id, *(kept_similar if table is SIMILAR_TRACKS else ())]
        query = sql.SQL(
            "select count(*), count(*) filter (where model_run_id <> all(%s::text[])) from {}"
        )
        counted = conn.execute(query.format(table.staged), (ours,)).fetchone()
        rows, others = counted or (0, 0)
        if others:
            raise PublishError(f"{name} holds another run's lists; nothing published")
        counts[table.name] = int(rows)
    record_model_runs(conn, model_runs)
    for table in TABLES:
        _swap(conn, table)
    return counts


def register_swap(
    publication: Publication,
    model_run_id: str,
    runs: Sequence[ModelRun],
    after_commit: Callable[[], None] | None = None,
    kept_similar: Sequence[str] = (),
) -> None:
    """The swap of the lists staged for `model_run_id` and the model runs, registered with the
    run's publication (`kept_similar`: swap_in's)."""
    publication.stage(
        SCHEMA,
        lambda conn: swap_in(conn, model_run_id, runs, kept_similar),
        tables={f"{SCHEMA}.{t.name}": f"{SCHEMA}.{t.name}__new" for t in TABLES},
        after_commit=after_commit,
        discard=discard_staged,
    )


def discard_staged(conn: psycopg.Connection) -> None:
    """Drop staged lists that will not be published (their run failed)."""
    for table in TABLES:
        conn.execute(sql.SQL("drop table if exists {}").format(table.staged))


def published_user_lists(conn: psycopg.Connection) -> tuple[np.ndarray, np.ndarray]:
    """The (user_id, track_id) rows served now (empty before the first publish): what the
    day-to-day churn of the new lists is counted against. Packed on the server as
    ml.interactions reads the listens: a few hundred bytea rows, no Python object per row."""
    query = _published_pairs(conn)
    if query is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = read_packed(conn, query, PAIR)
    return pairs["user_id"].astype(np.int64), pairs["track_id"].astype(np.int64)


def published_user_parts(conn: psycopg.Connection) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """published_user_lists' rows a bytea row at a time (ml.quality.Churn adds them): they
    are never held whole."""
    query = _published_pairs(conn)
    if query is not None:
        for pairs in packed_parts(conn, query, PAIR):
            yield pairs["user_id"], pairs["track_id"]


def _published_pairs(conn: psycopg.Connection) -> sql.Composed | None:
    name = f"{SCHEMA}.{USER_TOP_TRACKS.name}"
    if conn.execute("select to_regclass(%s)", (name,)).fetchone() == (None,):
        return None
    return sql.SQL(
        "copy (select string_agg(int8send(user_id) || int8send(track_id), ''::bytea) "
        "from {} group by user_id % {}) to stdout (format binary)"
    ).format(sql.Identifier(SCHEMA, USER_TOP_TRACKS.name), sql.Literal(PACKED_BUCKETS))


@dataclass(frozen=True)
class LivePlayNext:
    """The published similar_tracks, as a run that keeps them needs to know them."""

    model_runs: tuple[str, ...]  # the model runs of its rows
    kept_from: str  # the model run whose play next model made them (across kept days)
    model: str  # that model, as its ml.model_runs test report names it
    track_ids: np.ndarray  # int64, sorted: the tracks with a list


def live_play_next(conn: psycopg.Connection) -> LivePlayNext | None:
    """The published "play next" lists' provenance and tracks; None when there are none."""
    name = f"{SCHEMA}.{SIMILAR_TRACKS.name}"
    if conn.execute("select to_regclass(%s)", (name,)).fetchone() == (None,):
        return None
    live = sql.Identifier(SCHEMA, SIMILAR_TRACKS.name)
    query = sql.SQL("select model_run_id, count(*) from {} group by 1 order by 2 desc, 1")
    runs = conn.execute(query.format(live)).fetchall()
    if not runs:
        return None
    ensure_model_runs(conn)
    made_by = conn.execute(
        "select coalesce(metrics -> 'test' -> 'play_next' ->> 'kept_from', model_run_id), "
        "coalesce(metrics -> 'test' -> 'play_next' ->> 'model', '') "
        "from ml.model_runs where model_run_id = %s",
        (runs[0][0],),
    ).fetchone()
    kept_from, model = made_by or (runs[0][0], "")
    tracks = conn.execute(sql.SQL("select distinct track_id from {}").format(live)).fetchall()
    track_ids = np.sort(np.array([t for (t,) in tracks], dtype=np.int64))
    return LivePlayNext(tuple(r for r, _ in runs), kept_from, model, track_ids)

"""Publishing: the new lists COPYed into new tables, swapped in with one transaction.

`make train` on its own publishes at once (`publish`). The daily run writes, audits, then
publishes (moovitamix/publication.py): `stage` fills the `__new` tables and commits, the audit
checks them, and `swap_in` renames them into place inside the run's publish transaction.

Everything happens in one transaction: create `<table>__new`, binary COPY the rows, build the
primary keys (which are the app's lookups: by user, by track), write the ml.model_runs rows,
then drop the live tables and rename the new ones into place. Until the commit no reader sees
anything new; at the commit a reader sees the whole new tables. A reader that queries during
the swap waits for the commit (milliseconds: the swap is renames) and then reads the new
table. Any failure rolls it all back: yesterday's tables stay, with no leftovers.

Only the swap takes locks on the live tables; `lock_timeout` bounds how long it waits for a
long-running reader before the run fails (and yesterday's lists stay).
Privileges: new tables get the schema's default privileges, so grant the app its access with
`alter default privileges in schema recommendations grant select on tables to <app role>`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.types.json import Jsonb

from ml.lists import SOURCES, SimilarTracks, UserTopTracks
from ml.pgcopy import FLOAT8, HEADER, INT4, INT8, TIMESTAMPTZ, TRAILER, encode, timestamptz
from ml.registry import MODEL_RUNS_COLUMNS, ModelRun, ensure_model_runs
from moovitamix.errors import one_line
from moovitamix.warehouse import take_publish_locks

log = logging.getLogger(__name__)

SCHEMA = "recommendations"
USER_TOP_TRACKS = "user_top_tracks"
SIMILAR_TRACKS = "similar_tracks"
ROWS_PER_BLOCK = 250_000
USER_COLUMNS = ("user_id", "rank", "track_id", "score", "source", "model_run_id", "generated_at")
SIMILAR_COLUMNS = ("track_id", "rank", "similar_track_id", "score", "model_run_id", "generated_at")
# One publisher at a time (two concurrent runs would otherwise race on the __new tables).
PUBLISH_LOCK_KEY = 0x6D76785F6D6C  # "mvx_ml"

USER_TOP_TRACKS_DDL = """
    create table {table} (
        user_id bigint not null,
        rank integer not null check (rank >= 1),
        track_id bigint not null,
        score double precision not null,
        source text not null,
        model_run_id text not null,
        generated_at timestamptz not null
    )
"""
SIMILAR_TRACKS_DDL = """
    create table {table} (
        track_id bigint not null,
        rank integer not null check (rank >= 1),
        similar_track_id bigint not null,
        score double precision not null,
        model_run_id text not null,
        generated_at timestamptz not null
    )
"""
COMMENTS = {
    USER_TOP_TRACKS: (
        "Daily top tracks per user (home screen), already-heard tracks excluded. source: 'als', "
        "or the fallback used (genre_popularity, popularity). Written by ml/ (make train)."
    ),
    SIMILAR_TRACKS: (
        "Tracks to play next: the nearest tracks of each track by ALS item factors (the score "
        "of ml/config.toml [publish] similar_scoring, dot product by default), itself excluded. "
        "Written by ml/ (make train)."
    ),
}
PRIMARY_KEYS = {USER_TOP_TRACKS: ("user_id", "rank"), SIMILAR_TRACKS: ("track_id", "rank")}


PublishHook = Callable[[str, psycopg.Connection], None]


class PublishError(RuntimeError):
    """Publishing failed; yesterday's tables are untouched. The message is one line."""


def _user_blocks(lists: UserTopTracks, model_run_id: str, at: int) -> Iterator[tuple[bytes, int]]:
    for code, source in enumerate(SOURCES):
        rows = np.flatnonzero(lists.source == code)
        for start in range(0, len(rows), ROWS_PER_BLOCK):
            part = rows[start : start + ROWS_PER_BLOCK]
            columns = [
                ("user_id", INT8),
                ("rank", INT4),
                ("track_id", INT8),
                ("score", FLOAT8),
                ("source", f"S{len(source.encode())}"),
                ("model_run_id", f"S{len(model_run_id.encode())}"),
                ("generated_at", TIMESTAMPTZ),
            ]
            values = {
                "user_id": lists.user_id[part],
                "rank": lists.rank[part],
                "track_id": lists.track_id[part],
                "score": lists.score[part],
                "source": source,
                "model_run_id": model_run_id,
                "generated_at": at,
            }
            yield encode(columns, values, len(part)), len(part)


def _similar_blocks(
    lists: SimilarTracks, model_run_id: str, at: int
) -> Iterator[tuple[bytes, int]]:
    columns = [
        ("track_id", INT8),
        ("rank", INT4),
        ("similar_track_id", INT8),
        ("score", FLOAT8),
        ("model_run_id", f"S{len(model_run_id.encode())}"),
        ("generated_at", TIMESTAMPTZ),
    ]
    for start in range(0, len(lists), ROWS_PER_BLOCK):
        part = slice(start, start + ROWS_PER_BLOCK)
        values = {
            "track_id": lists.track_id[part],
            "rank": lists.rank[part],
            "similar_track_id": lists.similar_track_id[part],
            "score": lists.score[part],
            "model_run_id": model_run_id,
            "generated_at": at,
        }
        yield encode(columns, values, len(lists.track_id[part])), len(lists.track_id[part])


def _load(
    conn: psycopg.Connection,
    table: str,
    ddl: str,
    columns: Sequence[str],
    blocks: Iterator[tuple[bytes, int]],
) -> int:
    new = _staged(table)
    conn.execute(sql.SQL("drop table if exists {}").format(new))
    conn.execute(sql.SQL(ddl).format(table=new))
    copy_sql = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        new, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    rows = 0
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write(HEADER)
        for block, n in blocks:
            copy.write(block)
            rows += n
        copy.write(TRAILER)
    conn.execute(
        sql.SQL("alter table {} add constraint {} primary key ({})").format(
            new,
            sql.Identifier(f"{table}__new_pkey"),
            sql.SQL(", ").join(map(sql.Identifier, PRIMARY_KEYS[table])),
        )
    )
    conn.execute(sql.SQL("analyze {}").format(new))
    return rows


def _swap(conn: psycopg.Connection, table: str) -> None:
    live = sql.Identifier(SCHEMA, table)
    conn.execute(sql.SQL("drop table if exists {}").format(live))
    conn.execute(
        sql.SQL("alter table {} rename to {}").format(
            sql.Identifier(SCHEMA, f"{table}__new"), sql.Identifier(table)
        )
    )
    conn.execute(
        sql.SQL("alter index {} rename to {}").format(
            sql.Identifier(SCHEMA, f"{table}__new_pkey"), sql.Identifier(f"{table}_pkey")
        )
    )
    conn.execute(sql.SQL("comment on table {} is {}").format(live, sql.Literal(COMMENTS[table])))


def _insert_model_runs(conn: psycopg.Connection, runs: Sequence[ModelRun]) -> None:
    if not runs:
        return
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(MODEL_RUNS_COLUMNS))
    # a rerun under the same run id replaces its rows instead of failing on the key
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(column))
        for column in MODEL_RUNS_COLUMNS[1:]
    )
    statement = sql.SQL(
        "insert into ml.model_runs ({}) values ({}) on conflict (model_run_id) do update set {}"
    ).format(sql.SQL(", ").join(map(sql.Identifier, MODEL_RUNS_COLUMNS)), placeholders, updates)
    with conn.cursor() as cur:
        cur.executemany(
            statement,
            [
                (
                    run.model_run_id,
                    run.run_id,
                    run.trained_at,
                    Jsonb(run.params),
                    Jsonb(run.metrics),
                    Jsonb(run.baseline_metrics),
                    run.n_users,
                    run.n_tracks,
                    run.n_interactions,
                    run.status,
                    run.artifact_path,
                )
                for run in runs
            ],
        )


def _staged(table: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, f"{table}__new")


def staged_table_names() -> dict[str, str]:
    """Live name -> staged name of each list, as "schema.table" (for the audits)."""
    return {f"{SCHEMA}.{t}": f"{SCHEMA}.{t}__new" for t in (USER_TOP_TRACKS, SIMILAR_TRACKS)}


def _load_both(
    conn: psycopg.Connection,
    user_lists: UserTopTracks,
    similar_lists: SimilarTracks,
    model_run_id: str,
    generated_at: datetime,
) -> dict[str, int]:
    at = timestamptz(generated_at)
    return {
        USER_TOP_TRACKS: _load(
            conn,
            USER_TOP_TRACKS,
            USER_TOP_TRACKS_DDL,
            USER_COLUMNS,
            _user_blocks(user_lists, model_run_id, at),
        ),
        SIMILAR_TRACKS: _load(
            conn,
            SIMILAR_TRACKS,
            SIMILAR_TRACKS_DDL,
            SIMILAR_COLUMNS,
            _similar_blocks(similar_lists, model_run_id, at),
        ),
    }


def _check_publishable(conn: psycopg.Connection, user_lists: UserTopTracks) -> None:
    if not conn.autocommit:
        raise ValueError("needs an autocommit connection: it runs its own transaction")
    if len(user_lists) == 0:
        raise PublishError("refusing to publish an empty user_top_tracks")
    ensure_model_runs(conn)


def stage(
    conn: psycopg.Connection,
    user_lists: UserTopTracks,
    similar_lists: SimilarTracks,
    *,
    model_run_id: str,
    generated_at: datetime,
) -> dict[str, int]:
    """Write both lists into `recommendations.<table>__new` and commit; nothing live changes.
    The daily run audits them there, then `swap_in` publishes them (write-audit-publish)."""
    _check_publishable(conn, user_lists)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_KEY,))
        counts = _load_both(conn, user_lists, similar_lists, model_run_id, generated_at)
    log.info(
        "staged %d user_top_tracks rows and %d similar_tracks rows (model run %s)",
        counts[USER_TOP_TRACKS],
        counts[SIMILAR_TRACKS],
        model_run_id,
    )
    return counts


def swap_in(conn: psycopg.Connection, model_runs: Sequence[ModelRun]) -> dict[str, int]:
    """Inside the caller's transaction: put the staged lists in place of the live ones and
    record the model runs. Rows per table."""
    conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_KEY,))  # vs `make train`
    counts: dict[str, int] = {}
    for table in (USER_TOP_TRACKS, SIMILAR_TRACKS):
        row = conn.execute(
            "select to_regclass(%s) is not null", (f"{SCHEMA}.{table}__new",)
        ).fetchone()
        if not row or not row[0]:
            raise PublishError(f"no staged {SCHEMA}.{table}__new to publish")
        counted = conn.execute(sql.SQL("select count(*) from {}").format(_staged(table)))
        counts[table] = int((counted.fetchone() or (0,))[0])
    ensure_model_runs(conn)
    _insert_model_runs(conn, model_runs)
    for table in (USER_TOP_TRACKS, SIMILAR_TRACKS):
        _swap(conn, table)
    return counts


def discard_staged(conn: psycopg.Connection) -> None:
    """Drop staged lists that will not be published (their run failed)."""
    for table in (USER_TOP_TRACKS, SIMILAR_TRACKS):
        conn.execute(sql.SQL("drop table if exists {}").format(_staged(table)))


def publish(
    conn: psycopg.Connection,
    user_lists: UserTopTracks,
    similar_lists: SimilarTracks,
    *,
    model_run_id: str,
    generated_at: datetime,
    model_runs: Sequence[ModelRun],
    lock_timeout_s: float,
    hook: PublishHook | None = None,
) -> dict[str, int]:
    """Publish both tables and record the model runs in one transaction; rows per table.
    (`make train` on its own; the daily run stages, audits, then publishes with everything
    else: see `stage` and `swap_in`.)

    `conn` must be in autocommit mode (the transaction is this function's). `hook(stage,
    conn)` is called at stage "loaded" (new tables filled, nothing swapped) and "swapped"
    (renamed, not yet committed): tests use it to fail or pause half-way.
    """
    _check_publishable(conn, user_lists)
    try:
        with conn.transaction():
            take_publish_locks(conn, PUBLISH_LOCK_KEY, lock_timeout_s)
            counts = _load_both(conn, user_lists, similar_lists, model_run_id, generated_at)
            _insert_model_runs(conn, model_runs)
            if hook is not None:
                hook("loaded", conn)
            for table in (USER_TOP_TRACKS, SIMILAR_TRACKS):
                _swap(conn, table)
            if hook is not None:
                hook("swapped", conn)
    except psycopg.errors.LockNotAvailable:
        raise PublishError(
            f"publishing gave up after waiting {lock_timeout_s:g}s for readers of the "
            "recommendations tables; yesterday's lists stay"
        ) from None
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise PublishError(
            f"cannot replace the recommendations tables, other objects depend on them "
            f"({one_line(exc)}); yesterday's lists stay"
        ) from None
    log.info(
        "published %d user_top_tracks rows and %d similar_tracks rows (model run %s)",
        counts[USER_TOP_TRACKS],
        counts[SIMILAR_TRACKS],
        model_run_id,
    )
    return counts


def _user_lists_of(batch: pa.RecordBatch) -> UserTopTracks:
    codes = {name: i for i, name in enumerate(SOURCES)}
    return UserTopTracks(
        user_id=batch.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64),
        rank=batch.column("rank").to_numpy(zero_copy_only=False).astype(np.int32),
        track_id=batch.column("track_id").to_numpy(zero_copy_only=False).astype(np.int64),
        score=batch.column("score").to_numpy(zero_copy_only=False).astype(np.float64),
        source=np.array([codes[s] for s in batch.column("source").to_pylist()], dtype=np.int8),
    )


def _similar_lists_of(batch: pa.RecordBatch) -> SimilarTracks:
    return SimilarTracks(
        track_id=batch.column("track_id").to_numpy(zero_copy_only=False).astype(np.int64),
        rank=batch.column("rank").to_numpy(zero_copy_only=False).astype(np.int32),
        similar_track_id=batch.column("similar_track_id")
        .to_numpy(zero_copy_only=False)
        .astype(np.int64),
        score=batch.column("score").to_numpy(zero_copy_only=False).astype(np.float64),
    )


def stage_batches(
    conn: psycopg.Connection,
    user_batches: Iterator[pa.RecordBatch],
    similar_batches: Iterator[pa.RecordBatch],
    *,
    model_run_id: str,
    generated_at: datetime,
) -> dict[str, int]:
    """`stage` for lists that come in Arrow batches (trained in Spark: ml/mllib): each batch
    is COPYed as it comes, so the driver never holds a whole list."""
    if not conn.autocommit:
        raise ValueError("needs an autocommit connection: it runs its own transaction")
    ensure_model_runs(conn)
    at = timestamptz(generated_at)
    users = (
        block
        for batch in user_batches
        for block in _user_blocks(_user_lists_of(batch), model_run_id, at)
    )
    similar = (
        block
        for batch in similar_batches
        for block in _similar_blocks(_similar_lists_of(batch), model_run_id, at)
    )
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_KEY,))
        counts = {
            USER_TOP_TRACKS: _load(conn, USER_TOP_TRACKS, USER_TOP_TRACKS_DDL, USER_COLUMNS, users),
            SIMILAR_TRACKS: _load(
                conn, SIMILAR_TRACKS, SIMILAR_TRACKS_DDL, SIMILAR_COLUMNS, similar
            ),
        }
        if counts[USER_TOP_TRACKS] == 0:
            raise PublishError("refusing to publish an empty user_top_tracks")
    log.info(
        "staged %d user_top_tracks rows and %d similar_tracks rows from Spark (model run %s)",
        counts[USER_TOP_TRACKS],
        counts[SIMILAR_TRACKS],
        model_run_id,
    )
    return counts

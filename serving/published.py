"""The published tables, read as mvx_app: a user's list, a track's play-next list, a user's
listens, and what the last publish was (its model run, when, the cold-start list).

Every list is one statement, so it comes whole from one publish: the publish swaps the tables
in one transaction. Parameters are bound, never formatted into SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

MODEL_SOURCE = "model"  # user_top_tracks.source of the model's rows; any other is a fallback
FALLBACK_ROWS = 100  # the cold-start list's length: the largest k


@dataclass(frozen=True)
class Item:
    track_id: int
    score: float
    rank: int


@dataclass(frozen=True)
class PublishedList:
    model_run_id: str
    generated_at: datetime
    is_model: bool
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Publication:
    """What the last publish was; `fallback` is served to users and tracks the lists lack."""

    model_run_id: str
    generated_at: datetime
    fallback: tuple[Item, ...]


def _as_list(rows: list[tuple]) -> PublishedList | None:
    if not rows:
        return None
    items = tuple(Item(int(track), float(score), int(rank)) for rank, track, score, *_ in rows)
    first = rows[0]
    return PublishedList(first[3], first[4], first[5] == MODEL_SOURCE, items)


async def user_list(conn: psycopg.AsyncConnection, user_id: int, k: int) -> PublishedList | None:
    cursor = await conn.execute(
        "select rank, track_id, score, model_run_id, generated_at, source "
        "from recommendations.user_top_tracks where user_id = %s and rank <= %s order by rank",
        (user_id, k),
    )
    return _as_list(await cursor.fetchall())


async def next_list(conn: psycopg.AsyncConnection, track_id: int, k: int) -> PublishedList | None:
    cursor = await conn.execute(
        "select rank, similar_track_id, score, model_run_id, generated_at, %s "
        "from recommendations.similar_tracks where track_id = %s and rank <= %s order by rank",
        (MODEL_SOURCE, track_id, k),
    )
    return _as_list(await cursor.fetchall())


async def listens(conn: psycopg.AsyncConnection, user_id: int) -> dict[int, int]:
    """The user's listens per track (marts.fct_listens, as of the last daily run)."""
    cursor = await conn.execute(
        "select track_id, listen_count from marts.fct_listens where user_id = %s", (user_id,)
    )
    return {int(track): int(count) for track, count in await cursor.fetchall()}


def published_run(conn: psycopg.Connection) -> tuple[str, datetime] | None:
    """The model run and time of the lists now published; None before the first publish."""
    try:
        row = conn.execute(
            "select model_run_id, generated_at from recommendations.user_top_tracks limit 1"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return None
    return (row[0], row[1]) if row else None


def publication(conn: psycopg.Connection) -> Publication | None:
    """The last publish, with its cold-start list: the tracks most often in users' lists (the
    share of users whose list holds each), read in one statement."""
    rows = conn.execute(
        "with lists as (select track_id, model_run_id, generated_at, rank "
        "    from recommendations.user_top_tracks) "
        "select track_id, count(*)::float8 / (select count(*) from lists where rank = 1), "
        "    min(model_run_id), min(generated_at) "
        "from lists group by track_id order by 2 desc, track_id limit %s",
        (FALLBACK_ROWS,),
    ).fetchall()
    if not rows:
        return None
    fallback = tuple(Item(int(t), float(s), rank) for rank, (t, s, *_) in enumerate(rows, 1))
    return Publication(rows[0][2], rows[0][3], fallback)

"""Publishing is atomic: readers see yesterday's lists or today's, never an empty or partial
table, and a failure anywhere before the commit leaves yesterday's lists in place and nothing
staged. The lists are staged, then swapped in by a publication of their own, as `make train`
does; injected failures and holds run inside its transaction, before or after the swap."""

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from ml.lists import SimilarTracks, UserTopTracks
from ml.publish import (
    PublishError,
    published_user_lists,
    register_swap,
    similar_columns,
    stage,
    user_columns,
)
from ml.registry import ModelRun
from moovitamix.publication import Publication, PublishFailed, discard, publish
from moovitamix.warehouse import connect
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
K = 10


def lists(n_users: int, seed: int) -> tuple[UserTopTracks, SimilarTracks]:
    rng = np.random.default_rng(seed)
    n = n_users * K
    users = UserTopTracks(
        user_id=np.repeat(np.arange(n_users, dtype=np.int64), K),
        rank=np.tile(np.arange(1, K + 1, dtype=np.int32), n_users),
        track_id=rng.integers(1, 10**6, n),
        score=rng.random(n),
        source=rng.choice(4, n, p=[0.7, 0.15, 0.1, 0.05]).astype(np.int8),  # ml.lists' codes
    )
    similar = SimilarTracks(
        track_id=np.repeat(np.arange(500, dtype=np.int64), K),
        rank=np.tile(np.arange(1, K + 1, dtype=np.int32), 500),
        similar_track_id=rng.integers(1, 10**6, 500 * K),
        score=rng.random(500 * K),
    )
    return users, similar


Hook = Callable[[psycopg.Connection], None]


def _stage(url, version: str, n_users: int) -> dict[str, int]:
    users, similar = lists(n_users, seed=n_users)
    with connect(url, autocommit=True) as conn:
        parts = [user_columns(users)], [similar_columns(similar)]
        return stage(conn, *parts, model_run_id=version, generated_at=datetime.now(UTC))


def _publish(
    url,
    version: str,
    n_users: int,
    *,
    lock_timeout_s: float = 30,
    before: Hook | None = None,
    after: Hook | None = None,
    runs: Sequence[ModelRun] = (),
) -> dict[str, int]:
    """Stage, then swap in (with `before`/`after` run before/after the swap, in its transaction);
    a failure discards what was staged."""
    publication = Publication(version, candidate="marts", swaps_postgres_marts=False)
    if before is not None:
        publication.stage("before", lambda conn: before(conn) or {})
    try:
        rows = _stage(url, version, n_users)
        register_swap(publication, version, runs)
        if after is not None:
            publication.stage("after", lambda conn: after(conn) or {}, last=True)
        publish(url, publication, lock_timeout_s=lock_timeout_s)
    except BaseException:
        discard(url, publication)
        raise
    return rows


def _staged_tables(url) -> list[tuple[str]]:
    with connect(url) as conn:
        return conn.execute(
            "select tablename from pg_tables where schemaname = 'recommendations' order by 1"
        ).fetchall()


def _state(url) -> tuple[int, int, str]:
    with connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*), count(distinct model_run_id), min(model_run_id) "
            "from recommendations.user_top_tracks"
        ).fetchone()
    assert row is not None
    return row


def test_published_rows_are_exact(fresh_warehouse) -> None:
    users, _ = lists(300, seed=300)  # what _publish writes
    counts = _publish(fresh_warehouse, "v1", 300)
    assert counts == {"user_top_tracks": 3000, "similar_tracks": 5000}
    with connect(fresh_warehouse) as conn:
        rows = conn.execute(
            "select user_id, rank, track_id, score, source, model_run_id "
            "from recommendations.user_top_tracks order by user_id, rank"
        ).fetchall()
        pkeys = conn.execute(
            "select indexrelid::regclass::text from pg_index "
            "where indrelid in ('recommendations.user_top_tracks'::regclass, "
            "'recommendations.similar_tracks'::regclass) and indisprimary order by 1"
        ).fetchall()
    assert [r[0] for r in rows] == users.user_id.tolist()
    assert [r[1] for r in rows] == users.rank.tolist()
    assert [r[2] for r in rows] == users.track_id.tolist()
    assert [r[3] for r in rows] == users.score.tolist()
    names = ["model", "genre_popularity", "popularity", "new_track"]
    assert [r[4] for r in rows] == [names[c] for c in users.source]
    assert users.sources() == dict(Counter(r[4] for r in rows))
    assert {r[5] for r in rows} == {"v1"}
    assert pkeys == [
        ("recommendations.similar_tracks_pkey",),
        ("recommendations.user_top_tracks_pkey",),
    ]
    _publish(fresh_warehouse, "v2", 300)  # the index names are free again after a swap
    assert _state(fresh_warehouse) == (3000, 1, "v2")


def test_a_reader_during_publishing_sees_old_or_new_never_empty_or_mixed(
    fresh_warehouse,
) -> None:
    _publish(fresh_warehouse, "v1", 20_000)
    seen: list[tuple[int, int, str]] = []
    errors: list[BaseException] = []
    reader_pid: list[int] = []
    blocked_on_swap: list[bool] = []
    stop = threading.Event()

    def read() -> None:
        try:
            with connect(fresh_warehouse, autocommit=True) as conn:
                reader_pid.append(conn.info.backend_pid)
                while not stop.is_set():
                    row = conn.execute(
                        "select count(*), count(distinct model_run_id), min(model_run_id) "
                        "from recommendations.user_top_tracks"
                    ).fetchone()
                    seen.append(row)  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            errors.append(exc)

    def loaded(conn) -> None:
        """Staged: the reader keeps reading the old table meanwhile (a few reads more)."""
        reads = len(seen)
        wait_until(lambda: len(seen) >= reads + 3 or errors, "the reader to read while staged")

    def swapped(conn) -> None:
        """Keep the swap uncommitted until the reader is blocked by it."""

        def reader_waits_on_a_lock() -> bool:
            waiting = conn.execute(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s",
                (reader_pid[0],),
            ).fetchone()
            return bool(waiting and waiting[0])

        wait_until(reader_waits_on_a_lock, "the reader to wait on the swap's locks")
        blocked_on_swap.append(True)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _publish(fresh_warehouse, "v2", 25_000, before=loaded, after=swapped)
        _publish(fresh_warehouse, "v3", 20_000, before=loaded, after=swapped)
    finally:
        stop.set()
        reader.join(30)
    # the reader queried while the renames were not yet committed, waited, then read the new
    assert blocked_on_swap == [True, True]
    assert errors == []
    assert set(seen) <= {(200_000, 1, "v1"), (250_000, 1, "v2"), (200_000, 1, "v3")}
    versions = [s[2] for s in seen]
    assert versions[0] == "v1" and versions[-1] == "v3"
    assert versions == sorted(versions)  # never back to an older version


@pytest.mark.parametrize("stage", ["loaded", "swapped"])
def test_a_failure_mid_publish_leaves_the_old_tables(fresh_warehouse, stage: str) -> None:
    _publish(fresh_warehouse, "v1", 100)

    def fail(conn) -> None:
        raise RuntimeError(f"killed at {stage}")

    with pytest.raises(RuntimeError, match="killed"):
        _publish(fresh_warehouse, "v2", 200, **{"before" if stage == "loaded" else "after": fail})
    assert _state(fresh_warehouse) == (1000, 1, "v1")
    assert _staged_tables(fresh_warehouse) == [("similar_tracks",), ("user_top_tracks",)]


def test_a_long_reader_makes_publishing_give_up_not_hang(fresh_warehouse) -> None:
    _publish(fresh_warehouse, "v1", 100)
    with connect(fresh_warehouse) as reader:  # an open transaction that read the table
        reader.execute("select count(*) from recommendations.user_top_tracks").fetchone()
        # the lock timeout's own error, not a hang: Postgres gave up waiting for the reader
        with pytest.raises(PublishFailed, match=r"gave up after waiting 0\.5s"):
            _publish(fresh_warehouse, "v2", 100, lock_timeout_s=0.5)
        reader.rollback()
    assert _state(fresh_warehouse) == (1000, 1, "v1")
    assert _staged_tables(fresh_warehouse) == [("similar_tracks",), ("user_top_tracks",)]


def test_lists_another_run_staged_meanwhile_are_not_published(fresh_warehouse) -> None:
    _publish(fresh_warehouse, "v1", 100)
    with pytest.raises(PublishError, match="user_top_tracks__new holds another run's lists"):
        # v3 stages over v2's staged lists before v2's swap
        _publish(fresh_warehouse, "v2", 200, before=lambda conn: _stage(fresh_warehouse, "v3", 300))
    assert _state(fresh_warehouse) == (1000, 1, "v1")
    assert _staged_tables(fresh_warehouse) == [("similar_tracks",), ("user_top_tracks",)]


def test_an_empty_list_is_never_published(fresh_warehouse) -> None:
    _publish(fresh_warehouse, "v1", 100)
    with pytest.raises(PublishError, match="empty user_top_tracks"):
        _publish(fresh_warehouse, "v2", 0)
    assert _state(fresh_warehouse) == (1000, 1, "v1")
    with pytest.raises(psycopg.errors.UndefinedTable), connect(fresh_warehouse) as conn:
        conn.execute("select * from recommendations.user_top_tracks__new")


def test_the_served_pairs_are_read_back_for_churn_and_runs_recorded_with_the_lists(
    fresh_warehouse,
) -> None:
    with connect(fresh_warehouse, autocommit=True) as conn:
        users, tracks = published_user_lists(conn)  # nothing published yet
        assert users.shape == tracks.shape == (0,)
    run = ModelRun(
        "v1-m00",
        "v1",
        datetime.now(UTC),
        family="ease",
        split="time",
        params={"model": "ease", "family": "ease"},
        metrics={"ndcg": 0.2},
        baseline_metrics={},
        n_users=1,
        n_tracks=1,
        n_interactions=1,
        status="champion",
    )
    lists_v1, _ = lists(300, seed=300)  # what _publish writes
    _publish(fresh_warehouse, "v1-m00", 300, runs=[run])
    with connect(fresh_warehouse, autocommit=True) as conn:
        users, tracks = published_user_lists(conn)
        recorded = conn.execute("select model_run_id, family, split from ml.model_runs").fetchall()
    assert users.dtype == tracks.dtype == np.int64
    assert sorted(zip(users.tolist(), tracks.tolist(), strict=True)) == sorted(
        zip(lists_v1.user_id.tolist(), lists_v1.track_id.tolist(), strict=True)
    )
    assert recorded == [("v1-m00", "ease", "time")]

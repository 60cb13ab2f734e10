import numpy as np
import pandas as pd
import pytest

from ml.sequences import (
    NO_ARTIST,
    PACKING_MEMORY,
    build_sequences,
    in_history_order,
    load_sequences,
    load_track_features,
    track_features,
)
from moovitamix.warehouse import connect

EPOCH_2026 = 1767225600  # 2026-01-01T00:00:00Z

# (user_id, track_id, positions, listen times as seconds after EPOCH_2026): users in several
# COPY messages (ranges of dim_users), histories with repeats and interleaved tracks
LISTENS = [
    (300, 11, [0, 2], [0, 60]),
    (300, 12, [1], [30]),
    (300, 13, [3, 4, 5], [90, 90, 7200]),
    (45, 12, [0], [5]),
    (45, 11, [1], [5]),
    (1001, 13, [2], [100]),
    (1001, 14, [0, 1], [1, 2]),
]
SCHEMA = "play_next_marts"
DDL = f"""
    create schema {SCHEMA};
    create table {SCHEMA}.dim_users (user_id bigint primary key);
    create table {SCHEMA}.dim_tracks (track_id bigint primary key, artist_name text);
    create table {SCHEMA}.bridge_track_genres (track_id bigint, genre_id text);
    create table {SCHEMA}.fct_listens (
        user_id bigint, track_id bigint, listen_count integer,
        positions integer[], listened_at timestamptz[],
        first_seen_at timestamptz, last_seen_at timestamptz,
        primary key (user_id, track_id)
    );
"""


def test_build_sorts_by_user_then_position() -> None:
    got = build_sequences(
        user_id=np.array([9, 2, 9, 2]),
        position=np.array([1, 5, 0, 0]),
        track_id=np.array([70, 71, 72, 73]),
        listened_at=np.array([4, 3, 2, 1]),
    )
    np.testing.assert_array_equal(got.user_id, [2, 2, 9, 9])
    np.testing.assert_array_equal(got.position, [0, 5, 0, 1])
    np.testing.assert_array_equal(got.track_id, [73, 71, 72, 70])
    np.testing.assert_array_equal(got.listened_at, [1, 3, 2, 4])
    assert len(got) == 4


def test_track_features_codes_artists_and_drops_pairs_of_unknown_tracks() -> None:
    got = track_features(
        np.array([3, 5, 8]),
        pd.Series(["a", None, "a"]),
        np.array([5, 8, 8, 99]),
        pd.Series(["rock", "jazz", "rock", "pop"]),
    )
    assert got.artist[0] == got.artist[2] != NO_ARTIST and got.artist[1] == NO_ARTIST
    assert got.genre_names == ("jazz", "pop", "rock")
    np.testing.assert_array_equal(got.genres.toarray(), [[0, 0, 0], [0, 0, 1], [1, 0, 1]])


def test_history_order_is_checked_across_chunks() -> None:
    user = np.array([1, 1, 2, 2, 2, 5])
    position = np.array([0, 1, 0, 1, 2, 0])
    for chunk in (1, 2, 4, 100):
        assert in_history_order(user, position, chunk)
        assert not in_history_order(user[::-1], position, chunk)
        assert not in_history_order(user, np.array([0, 1, 0, 2, 1, 0]), chunk)
    assert in_history_order(np.array([], dtype=np.int64), np.array([], dtype=np.int32))


@pytest.mark.integration
def test_sequences_and_track_features_load_from_the_marts(fresh_warehouse, caplog) -> None:
    with connect(fresh_warehouse) as conn:
        conn.execute(DDL)
        conn.execute(f"insert into {SCHEMA}.dim_users values (45), (300), (1001), (2000)")
        conn.execute(
            f"insert into {SCHEMA}.dim_tracks values "
            "(11, 'Nina'), (12, ' nina '), (13, null), (14, 'Otis'), (15, 'Nina')"
        )
        conn.execute(
            f"insert into {SCHEMA}.bridge_track_genres values "
            "(11, 'soul'), (12, 'soul'), (12, 'jazz'), (15, 'jazz')"
        )
        for user, track, positions, seconds in LISTENS:
            times = [f"to_timestamp({EPOCH_2026 + s})" for s in seconds]
            conn.execute(
                f"insert into {SCHEMA}.fct_listens values (%s, %s, %s, %s, "
                f"array[{', '.join(times)}], {times[0]}, {times[-1]})",
                (user, track, len(positions), positions),
            )
        conn.commit()
        conn.autocommit = True  # as the train step reads: the read is a transaction of its own
        work_mem = conn.execute("show work_mem").fetchone()
        got = load_sequences(conn, SCHEMA)
        # the read's larger work_mem (ml.sequences.PACKING_MEMORY) ended with it
        assert conn.execute("show work_mem").fetchone() == work_mem != (PACKING_MEMORY,)
        features = load_track_features(conn, SCHEMA)

    # the oracle: every listen unpacked in Python, sorted by (user, position)
    expected = sorted(
        (user, position, track, EPOCH_2026 + second)
        for user, track, positions, seconds in LISTENS
        for position, second in zip(positions, seconds, strict=True)
    )
    columns = [got.user_id, got.position, got.track_id, got.listened_at]
    assert list(zip(*(c.tolist() for c in columns), strict=True)) == expected
    assert "out of order" not in caplog.text  # the server sent them in history order
    assert [c.dtype for c in columns] == [np.int64, np.int32, np.int64, np.int64]

    np.testing.assert_array_equal(features.track_ids, [11, 12, 13, 14, 15])
    artist = features.artist
    assert artist[0] == artist[1] == artist[4] != artist[3]  # trimmed, case-folded
    assert artist[2] == NO_ARTIST
    assert features.genre_names == ("jazz", "soul")
    np.testing.assert_array_equal(
        features.genres.toarray(), [[0, 1], [1, 1], [0, 0], [0, 0], [1, 0]]
    )

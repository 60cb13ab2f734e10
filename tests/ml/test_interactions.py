from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.interactions import (
    NO_GENRE,
    MartsNotReady,
    build_interactions,
    check_marts,
    load_catalog,
    load_interactions,
)
from moovitamix.warehouse import connect
from tests.ml.synthetic import GENRES

EPOCH_2026 = 1767225600  # 2026-01-01T00:00:00Z


def test_build_sums_a_repeated_pair_and_keeps_its_earliest_listen() -> None:
    got = build_interactions(
        user_ids=np.array([50, 30, 50, 30, 90]),
        track_ids=np.array([7, 8, 7, 7, 8]),
        counts=np.array([1, 2, 3, 4, 5]),
        first_seen=np.array([100, 50, 40, 70, 1]),
    )
    np.testing.assert_array_equal(got.user_ids, [30, 50, 90])
    np.testing.assert_array_equal(got.track_ids, [7, 8])
    np.testing.assert_array_equal(got.matrix.toarray(), [[4, 2], [4, 0], [0, 5]])
    assert got.matrix.dtype == np.float32 and got.matrix.has_sorted_indices
    # aligned with matrix.data: (30, 7), (30, 8), (50, 7), (90, 8)
    np.testing.assert_array_equal(got.first_seen, [70, 50, 40, 1])
    assert build_interactions(np.array([1]), np.array([2]), np.array([3])).first_seen is None
    empty = build_interactions(np.array([]), np.array([]), np.array([]), np.array([]))
    assert empty.matrix.shape == (0, 0) and len(empty.first_seen) == 0


@pytest.mark.integration
def test_fct_listens_becomes_the_csr_matrix_with_its_id_maps(marts_url, structured_marts) -> None:
    m = structured_marts
    with connect(marts_url) as conn:
        interactions = load_interactions(conn)
        catalog = load_catalog(conn, interactions)
    assert interactions.n_interactions == len(m.listen_user)
    rows = interactions.rows_of(m.listen_user)
    cols = interactions.cols_of(m.listen_track)
    assert (rows >= 0).all() and (cols >= 0).all()
    np.testing.assert_array_equal(
        np.asarray(interactions.matrix[rows, cols]).ravel(), m.listen_count
    )
    assert interactions.matrix.has_sorted_indices
    assert interactions.rows_of(np.array([-5]))[0] == -1
    first = (
        pd.DataFrame({"user": m.event_user, "track": m.event_track, "at": m.event_at})
        .groupby(["user", "track"])["at"]
        .min()
    )
    owner = np.repeat(np.arange(interactions.n_users), np.diff(interactions.matrix.indptr))
    pairs = pd.MultiIndex.from_arrays(
        [interactions.user_ids[owner], interactions.track_ids[interactions.matrix.indices]]
    )
    assert interactions.first_seen is not None
    np.testing.assert_array_equal(interactions.first_seen, first.loc[pairs].to_numpy())

    assert len(catalog.user_ids) == len(m.user_ids)  # every dim_users user, listens or not
    names = np.array([GENRES[g] if g >= 0 else None for g in m.favorite_genre], dtype=object)
    got = np.array(
        [catalog.genre_names[g] if g != NO_GENRE else None for g in catalog.favorite_genre],
        dtype=object,
    )
    assert (got == names).all()
    assert catalog.n_catalog_tracks == len(m.track_ids)
    assert catalog.track_genres.shape == (interactions.n_tracks, len(catalog.genre_names))
    assert catalog.track_genres.sum(axis=1).min() >= 1  # every listened track has a genre


@pytest.mark.integration
def test_first_listen_times_come_aligned_with_the_matrix(marts_url, structured_marts) -> None:
    """Times set in SQL by a formula of the ids come back as epoch seconds on the right pairs;
    an unknown time reads as 0 (the oldest)."""
    m = structured_marts
    with connect(marts_url) as conn:
        conn.execute(
            "update marts.fct_listens set first_seen_at = timestamptz '2026-01-01 00:00:00+00'"
            " + (user_id % 97) * interval '1 day' + (track_id % 13) * interval '1 second'"
            " + interval '0.75 second'"
        )
        unknown_user, unknown_track = int(m.listen_user[0]), int(m.listen_track[0])
        conn.execute(
            "update marts.fct_listens set first_seen_at = null"
            " where user_id = %s and track_id = %s",
            (unknown_user, unknown_track),
        )
        interactions = load_interactions(conn)
    matrix = interactions.matrix
    owner = interactions.user_ids[np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))]
    track = interactions.track_ids[matrix.indices]
    expected = EPOCH_2026 + (owner % 97) * 86400 + track % 13  # fractions of a second dropped
    expected[(owner == unknown_user) & (track == unknown_track)] = 0
    assert interactions.first_seen is not None
    assert interactions.first_seen.dtype == np.int64
    np.testing.assert_array_equal(interactions.first_seen, expected)


def test_fct_listens_contract_keeps_the_first_listen_time() -> None:
    """load_interactions reads `first_seen_at` as it is: the mart's enforced contract has it."""
    path = Path(__file__).parents[2] / "dbt_project/models/marts/_marts__models.yml"
    models = yaml.safe_load(path.read_text())["models"]
    (mart,) = [m for m in models if m["name"] == "fct_listens"]
    (column,) = [c for c in mart["columns"] if c["name"] == "first_seen_at"]
    assert mart["config"]["contract"]["enforced"] is True
    assert "timestamp with time zone" in column["data_type"]
    assert {"type": "not_null"} in column["constraints"]


@pytest.mark.integration
def test_missing_marts_are_named(fresh_warehouse) -> None:
    with (
        connect(fresh_warehouse) as conn,
        pytest.raises(MartsNotReady, match=r"marts\.fct_listens"),
    ):
        check_marts(conn)

import numpy as np
import pytest

from ml.interactions import NO_GENRE, MartsNotReady, check_marts, load_catalog, load_interactions
from moovitamix.warehouse import connect
from tests.ml.synthetic import GENRES

pytestmark = pytest.mark.integration


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


def test_missing_marts_are_named(fresh_warehouse) -> None:
    with (
        connect(fresh_warehouse) as conn,
        pytest.raises(MartsNotReady, match=r"marts\.fct_listens"),
    ):
        check_marts(conn)

import numpy as np
import scipy.sparse as sp

from ml.rerank import favorite_genre_first, reranked

# tracks 0..5; genres: 0 = {0, 2, 4}, 1 = {1, 4}, track 3 and 5 have none
TRACK_GENRES = sp.csr_matrix(
    (np.ones(5), ([0, 2, 4, 1, 4], [0, 0, 0, 1, 1])), shape=(6, 2), dtype=np.float32
)


def test_favorite_genre_tracks_in_the_depth_come_first_in_the_models_order() -> None:
    ids = np.array(
        [
            [5, 3, 1, 2, 0, 4],  # favorite 0: 2, 0 then 4 (in the model's order), the rest after
            [5, 3, 1, 2, 0, 4],  # favorite 1: 1, 4 (4 is beyond the depth: not moved)
            [5, 3, 1, 2, -1, -1],  # no favorite genre: the model's order
        ]
    )
    favorite = np.array([0, 1, -1])
    got = reranked(ids, favorite, TRACK_GENRES, k=3, depth=5)
    assert got.tolist() == [[2, 0, 5], [1, 5, 3], [5, 3, 1]]


def test_a_depth_at_or_below_k_keeps_the_list_and_empty_slots_stay_last() -> None:
    ids = np.array([[5, 3, 0, -1, -1]])
    assert reranked(ids, np.array([0]), TRACK_GENRES, k=3, depth=3).tolist() == [[5, 3, 0]]
    assert reranked(ids, np.array([0]), TRACK_GENRES, k=4, depth=5).tolist() == [[0, 5, 3, -1]]
    positions = favorite_genre_first(ids, np.array([0]), TRACK_GENRES, k=4, depth=5)
    assert positions.tolist() == [[2, 0, 1, 3]]  # the same order applies to the scores


def test_without_any_genre_nothing_moves() -> None:
    none = sp.csr_matrix((6, 0), dtype=np.float32)
    ids = np.array([[5, 3, 1, 2]])
    assert reranked(ids, np.array([-1]), none, k=2, depth=4).tolist() == [[5, 3]]

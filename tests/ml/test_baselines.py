import numpy as np
import pytest
import scipy.sparse as sp

from ml import baselines
from ml.baselines import Popularity, _distinct_rows

# 4 users x 6 tracks. Listeners per track: t0 4, t1 3, t2 2, t3 2, t4 1, t5 0.
LISTENS = np.array(
    [
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 0],
    ],
    dtype=np.float32,
)
# genre 0: t2, t4, t5; genre 1: t0, t1, t3 (t3 is also genre 0)
GENRES = sp.csr_matrix(np.array([[0, 1], [0, 1], [1, 0], [1, 1], [1, 0], [1, 0]], dtype=np.float32))


def test_global_popularity_excludes_heard_tracks() -> None:
    pop = Popularity(sp.csr_matrix(LISTENS), GENRES)
    recs = pop.recommend(3, heard=sp.csr_matrix(LISTENS))
    assert recs.ids.tolist() == [[5, -1, -1], [3, 4, 5], [2, 4, 5], [1, 2, 3]]
    assert recs.scores[3].tolist() == [0.75, 0.5, 0.5]  # share of users who listened
    assert not recs.from_genre.any()


def test_genre_popularity_ranks_the_genre_first_then_global() -> None:
    pop = Popularity(sp.csr_matrix(LISTENS), GENRES)
    heard = sp.csr_matrix(LISTENS[[3, 3, 3]])
    recs = pop.recommend(4, heard=heard, favorite_genre=np.array([0, 1, -1]))
    assert recs.ids[0].tolist() == [2, 3, 4, 5]  # genre 0 by popularity (ties: lower index)
    assert recs.ids[1].tolist() == [1, 3, 2, 4]  # genre 1 runs out: global popularity next
    assert recs.from_genre[1].tolist() == [True, True, False, False]
    assert recs.ids[2].tolist() == [1, 2, 3, 4]  # no favorite genre: global popularity
    by_genre = pop.recommend(2, favorite_genre=np.array([0, 1, -1]))  # users without listens
    assert by_genre.ids.tolist() == [[2, 3], [0, 1], [0, 1]]


def test_similar_by_genre_excludes_the_track_itself() -> None:
    pop = Popularity(sp.csr_matrix(LISTENS), GENRES)
    recs = pop.similar_by_genre(2)
    assert all(track not in row for track, row in enumerate(recs.ids.tolist()))
    assert recs.ids[3].tolist()[0] in (0, 1, 2)  # shares a genre with t3


@pytest.mark.parametrize(("n", "n_genres"), [(2000, 17), (300, 70), (50, 0), (0, 5)])
def test_users_are_grouped_by_their_genres_as_numpys_unique_rows_would(n, n_genres) -> None:
    rng = np.random.default_rng(n)
    flags = rng.random((n, n_genres)) < 0.15
    classes, of_user = _distinct_rows(flags)
    expected, expected_of = np.unique(flags, axis=0, return_inverse=True)
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(of_user, expected_of.ravel())


@pytest.mark.parametrize("chunk", [1, 3])
def test_genre_classes_ranked_a_few_at_a_time_give_the_same_lists(monkeypatch, chunk) -> None:
    """Many genre classes (tracks with several genres): ranking them in chunks (memory)
    changes no list, for tracks (similar_by_genre) and for users (recommend)."""
    rng = np.random.default_rng(7)
    listens = sp.csr_matrix((rng.random((40, 30)) < 0.3).astype(np.float32))
    genres = sp.csr_matrix((rng.random((30, 6)) < 0.4).astype(np.float32))
    favorite = rng.integers(-1, 6, size=40)
    pop = Popularity(listens, genres)
    whole = (pop.similar_by_genre(5), pop.recommend(5, heard=listens, favorite_genre=favorite))

    monkeypatch.setattr(baselines, "RANKING_CHUNK", chunk)
    chunked = (pop.similar_by_genre(5), pop.recommend(5, heard=listens, favorite_genre=favorite))

    assert len(_distinct_rows(genres.toarray() > 0)[0]) > 3 * chunk  # several chunks
    for got, want in zip(chunked, whole, strict=True):
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.from_genre, want.from_genre)

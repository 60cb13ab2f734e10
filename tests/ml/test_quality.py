import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from ml.intervals import interval
from ml.quality import (
    ACCURACY,
    beyond_accuracy,
    catalog_coverage,
    churn,
    genre_diversity,
    novelty,
    per_user_ranking_metrics,
    segment_intervals,
    segments,
)


def _csr(rows: list[int], cols: list[int], shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)


def test_per_user_metrics_by_hand() -> None:
    truth = _csr([0, 0, 1], [1, 5, 2], (2, 10))
    ids = np.array([[5, 3, 1], [0, 2, -1]])
    got = per_user_ranking_metrics(ids, truth, k=3)
    np.testing.assert_allclose(got["precision"], [2 / 3, 1 / 3])
    np.testing.assert_allclose(got["recall"], [1.0, 1.0])
    np.testing.assert_allclose(got["map"], [(1 + 2 / 3) / 2, 1 / 2])
    ndcg_0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    np.testing.assert_allclose(got["ndcg"], [ndcg_0, 1 / np.log2(3)])
    with pytest.raises(ValueError, match="at least one held-out track"):
        per_user_ranking_metrics(ids, _csr([0], [1], (2, 10)), k=3)


def _by_loop(ids: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, list[float]]:
    """The README's definitions, one user and one slot at a time."""
    out: dict[str, list[float]] = {name: [] for name in ACCURACY}
    for row, slots in enumerate(ids):
        held = set(truth.indices[truth.indptr[row] : truth.indptr[row + 1]])
        hits = [t >= 0 and t in held for t in slots[:k]]
        ideal = min(k, len(held))
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / len(held))
        at_rank = [sum(hits[: r + 1]) / (r + 1) for r in range(len(hits))]
        out["map"].append(sum(p for p, hit in zip(at_rank, hits, strict=True) if hit) / ideal)
        dcg = sum(1 / np.log2(r + 2) for r, hit in enumerate(hits) if hit)
        out["ndcg"].append(dcg / sum(1 / np.log2(r + 2) for r in range(ideal)))
    return out


def test_per_user_metrics_against_a_plain_loop() -> None:
    """Random lists with empty slots, users holding out more and fewer tracks than k."""
    rng = np.random.default_rng(3)
    n_users, n_tracks, k = 300, 60, 10
    held = rng.integers(1, 15, n_users)
    rows = np.repeat(np.arange(n_users), held)
    cols = np.concatenate([rng.choice(n_tracks, h, replace=False) for h in held])
    truth = _csr(list(rows), list(cols), (n_users, n_tracks))
    ids = np.argsort(rng.random((n_users, n_tracks)), axis=1)[:, :k]
    ids[rng.random((n_users, k)) < 0.1] = -1
    got = per_user_ranking_metrics(ids, truth, k)
    for name, expected in _by_loop(ids, truth, k).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-12)


def test_segments_and_their_intervals() -> None:
    labels = segments(np.array([0, 1, 4, 5, 20, 21, 100]))
    assert labels.tolist() == ["0", "1-4", "1-4", "5-20", "5-20", "20+", "20+"]

    recall = np.array([0.5, 0.5, 0.2, 0.2, 0.9, 0.9, 0.4])
    got = segment_intervals({"recall": recall}, np.array(["1-4"] * 2 + ["20+"] * 5), seed=1)
    assert set(got) == {"all", "1-4", "5-20", "20+"}  # every segment, the empty one too
    assert got["1-4"]["recall"].mean == 0.5 and got["1-4"]["recall"].low == 0.5
    assert np.isnan(got["5-20"]["recall"].mean)
    assert got["20+"]["recall"] == interval(recall[2:], seed=1)
    assert got["all"]["recall"] == interval(recall, seed=1)
    assert "0" in segment_intervals({"recall": recall[:1]}, np.array(["0"]))


def test_catalog_coverage_by_hand() -> None:
    ids = np.array([[0, 3, -1], [3, 5, 0]])
    assert catalog_coverage(ids, 10) == 3 / 10
    assert catalog_coverage(np.full((2, 3), -1), 10) == 0.0


def test_novelty_by_hand() -> None:
    # training listeners per track: 3, 1, 1, 0 -> tracks more popular than each: 0, 1, 1, 3
    train = _csr([0, 1, 2, 0, 1], [0, 0, 0, 1, 2], (3, 4))
    ids = np.array([[0, 3, -1], [-1, -1, -1], [1, 2, 0]])
    got = novelty(ids, train)
    np.testing.assert_allclose(got[[0, 2]], [(0 + 3 / 4) / 2, (1 / 4 + 1 / 4 + 0) / 3])
    assert np.isnan(got[1])


GENRES_OF = {0: {0}, 1: {0, 1}, 2: {2}, 3: set(), 4: {1}, 5: {70}, 6: {6, 130}}


def _track_genres(genres_of: dict[int, set[int]], n_genres: int) -> sp.csr_matrix:
    pairs = [(t, g) for t, gs in genres_of.items() for g in gs]
    rows, cols = zip(*pairs, strict=True)
    return _csr(list(rows), list(cols), (len(genres_of), n_genres))


def test_genre_diversity_by_hand() -> None:
    track_genres = _track_genres(GENRES_OF, 140)  # three 64-bit words of genres
    ids = np.array(
        [
            [0, 1, 2],  # 0-1 share genre 0; 0-2 and 1-2 share nothing: 2 of 3 pairs
            [0, 3, 4],  # track 3 has no genre: only 0-4 counts, and they share nothing
            [1, 4, -1],  # both have genre 1
            [3, -1, -1],  # no pair
            [5, 6, 2],  # genres 70 and 6 are the same bit of different words: no overlap
        ]
    )
    got = genre_diversity(ids, track_genres)
    np.testing.assert_allclose(got[[0, 1, 2, 4]], [2 / 3, 1.0, 0.0, 1.0])
    assert np.isnan(got[3])


def test_genre_diversity_against_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random genres and lists, against a plain set-based count; also in tiny chunks."""
    rng = np.random.default_rng(9)
    genres_of = {t: set(rng.choice(90, rng.integers(0, 4), replace=False)) for t in range(50)}
    ids = np.array([rng.choice(50, 6, replace=False) for _ in range(40)])
    ids[rng.random(ids.shape) < 0.15] = -1
    expected = []
    for row in ids:
        pairs = [
            (a, b)
            for a, b in itertools.combinations([t for t in row if t >= 0], 2)
            if genres_of[a] and genres_of[b]
        ]
        apart = [not genres_of[a] & genres_of[b] for a, b in pairs]
        expected.append(np.mean(apart) if pairs else np.nan)
    track_genres = _track_genres(genres_of, 90)
    np.testing.assert_allclose(genre_diversity(ids, track_genres), expected)
    monkeypatch.setattr("ml.quality.CHUNK_CELLS", 1)
    np.testing.assert_allclose(genre_diversity(ids, track_genres), expected)


@pytest.mark.parametrize("big", [12, 10**12])  # ids in 31 bits, and not
def test_churn_by_hand(big: int) -> None:
    yesterday = (np.array([1, 1, 2, 2, 3]), np.array([10, 11, 10, big, 13]))
    today = (np.array([1, 1, 2, 2, 4]), np.array([10, 14, big, 10, 15]))
    # users 1 and 2 are served both days; of their 4 rows yesterday only (1, 11) is gone
    assert churn(yesterday, today) == 0.25
    assert churn(yesterday, yesterday) == 0.0
    assert np.isnan(churn(yesterday, (np.array([9]), np.array([10]))))
    assert np.isnan(churn(yesterday, (np.array([], dtype=np.int64), np.array([]))))
    # a user served a list both days, with nothing in common: all of it churned
    assert churn((np.array([-5, -5]), np.array([1, 2])), (np.array([-5]), np.array([3]))) == 1.0


def test_beyond_accuracy_summary() -> None:
    train = _csr([0, 1, 2, 0, 1], [0, 0, 0, 1, 2], (3, 7))
    ids = np.array([[0, 1, 2], [3, -1, -1]])
    got = beyond_accuracy(ids, train, _track_genres(GENRES_OF, 140), n_catalog_tracks=20)
    assert got["coverage"] == 4 / 20
    assert got["novelty"] == pytest.approx(np.nanmean(novelty(ids, train)))
    assert got["diversity"] == pytest.approx(2 / 3)  # the second list has no pair

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k

from ml.config import Evaluation, ModelParams, load_config
from ml.evaluate import (
    NEXT_HIT,
    EvaluationData,
    Holdout,
    NotEnoughData,
    leave_k_out,
    model_next_hit,
    next_track_hit_rate,
    next_track_metrics,
    ranking_metrics,
)
from ml.interactions import build_interactions
from ml.model import fit, recommend, single_threaded_blas


def _counts(structured_marts) -> sp.csr_matrix:
    m = structured_marts
    return build_interactions(m.listen_user, m.listen_track, m.listen_count).matrix


def test_metrics_by_hand() -> None:
    test = sp.csr_matrix((np.ones(3), ([0, 0, 1], [1, 5, 2])), shape=(2, 10), dtype=np.float32)
    ids = np.array([[5, 3, 1], [0, 2, -1]])
    got = ranking_metrics(ids, test, k=3, n_catalog_tracks=10)
    assert got["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)  # hits / k
    assert got["recall"] == pytest.approx(1.0)  # hits / held-out tracks
    assert got["map"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 1) / 2)
    ndcg_0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg_1 = (1 / np.log2(3)) / 1
    assert got["ndcg"] == pytest.approx((ndcg_0 + ndcg_1) / 2)
    assert got["coverage"] == pytest.approx(5 / 10)


def test_leave_k_out_holds_out_k_pairs_of_eligible_users_only(structured_marts) -> None:
    counts = _counts(structured_marts)
    settings = Evaluation(holdout_per_user=2, min_user_tracks=5, max_eval_users=10**6, seed=1)
    holdout = leave_k_out(counts, settings)
    per_user = np.diff(counts.indptr)
    held = np.diff(holdout.test.indptr)
    eligible = per_user >= 5
    assert np.all(held[eligible] == 2) and np.all(held[~eligible] == 0)
    assert np.array_equal(holdout.eval_rows, np.flatnonzero(eligible))
    assert (holdout.train + holdout.test != counts).nnz == 0  # a partition, values intact
    assert holdout.train.multiply(holdout.test).nnz == 0
    again = leave_k_out(counts, settings)
    assert (again.test != holdout.test).nnz == 0  # same data, same seed: same split


def test_leave_k_out_samples_at_most_max_eval_users(structured_marts) -> None:
    counts = _counts(structured_marts)
    holdout = leave_k_out(counts, Evaluation(max_eval_users=100, min_eval_users=10))
    assert len(holdout.eval_rows) == 100
    assert np.count_nonzero(np.diff(holdout.test.indptr)) == 100
    with pytest.raises(NotEnoughData, match="evaluation needs at least"):
        leave_k_out(counts, Evaluation(min_user_tracks=10**6, min_eval_users=1))


def test_metrics_agree_with_implicits_own(structured_marts) -> None:
    """MAP and NDCG are implicit's definitions; our recall is what implicit calls precision
    (issue #412) when every user has holdout_per_user <= k held-out tracks. implicit ranks
    with its own filtered recommend, so this also checks our top-k gives the same lists."""
    counts = _counts(structured_marts)
    holdout = leave_k_out(counts, Evaluation(max_eval_users=10**6, seed=3))
    fitted = fit(holdout.train, ModelParams(factors=16, iterations=5), num_threads=1)
    with single_threaded_blas():
        theirs = ranking_metrics_at_k(
            fitted.als, holdout.train, holdout.test, K=10, show_progress=False, num_threads=1
        )
    ids, _ = recommend(fitted.als, holdout.eval_rows, holdout.train, 10)  # ml.topk's path
    ours = ranking_metrics(ids, holdout.test[holdout.eval_rows], 10, counts.shape[1])
    assert ours["map"] == pytest.approx(theirs["map"], rel=1e-6)
    assert ours["ndcg"] == pytest.approx(theirs["ndcg"], rel=1e-6)
    assert ours["recall"] == pytest.approx(theirs["precision"], rel=1e-6)
    assert ours["precision"] == pytest.approx(theirs["precision"] * 2 / 10, rel=1e-6)


def _planted_next_track(
    seed: int = 3, *, per_block: int = 20, per_user: int = 8, zipf: float = 0.0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """600 users x 10 blocks of `per_block` tracks: each user plays `per_user` tracks of one
    block, drawn with weight rank ** -zipf inside the block (0: uniform), and one of 5 global
    hits, so what a user plays next is told by what they played more than by popularity (the
    hits make popularity a real competitor). Genres pair the blocks."""
    rng = np.random.default_rng(seed)
    n_users, n_blocks = 600, 10
    block = rng.integers(0, n_blocks, n_users)
    weight = np.arange(1, per_block + 1, dtype=float) ** -zipf
    weight /= weight.sum()
    rows, cols = [], []
    for user in range(n_users):
        picked = rng.choice(per_block, per_user, replace=False, p=weight)
        hit = rng.integers(0, 5)  # tracks 0..4 are everybody's hits
        rows += [user] * (per_user + 1)
        cols += [*(block[user] * per_block + picked), hit]
    counts = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_blocks * per_block)
    )
    counts.sum_duplicates()
    counts.sort_indices()
    genre = np.arange(n_blocks * per_block) // (2 * per_block)
    track_genres = sp.csr_matrix(
        (np.ones(len(genre), dtype=np.float32), (np.arange(len(genre)), genre))
    )
    return counts, track_genres


def _planted_data(counts: sp.csr_matrix, track_genres: sp.csr_matrix) -> EvaluationData:
    holdout = leave_k_out(counts, Evaluation(max_eval_users=10**6, seed=2))
    no_genre = np.full(counts.shape[0], -1, np.int32)
    return EvaluationData(holdout, no_genre, track_genres, counts.shape[1], 10)


def test_next_track_hit_rate_by_hand() -> None:
    counts = sp.csr_matrix(
        np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=np.float32)
    )  # user 0 holds out track 2, user 1 tracks 3 and 4
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=np.float32))
    train = counts - test
    train.eliminate_zeros()
    holdout = Holdout(train, test, np.array([0, 1]), 2)
    similar_ids = np.array([[2, 3], [4, -1], [0, 1], [0, 1], [0, 1]])
    # user 0 (seeds 0, 1): seed 0's list holds 2, seed 1's does not -> 1/2;
    # user 1 (seeds 1, 2): seed 1's list holds 4, seed 2's nothing -> 1/2
    assert next_track_hit_rate(similar_ids, holdout, k=2) == pytest.approx(0.5)
    assert next_track_hit_rate(similar_ids[:, :1], holdout, k=1) == pytest.approx(0.5)
    similar_ids[1] = [2, 4]  # seed 1 now hits for both users: user 0 2/2, user 1 1/2
    assert next_track_hit_rate(similar_ids, holdout, k=2) == pytest.approx((1 + 1 / 2) / 2)
    assert next_track_hit_rate(similar_ids, holdout, k=1) == pytest.approx((1 + 0) / 2)
    similar_ids[2] = [3, 0]  # and seed 2 for user 1
    assert next_track_hit_rate(similar_ids, holdout, k=2) == pytest.approx(1.0)


def test_next_track_lists_of_als_beat_popularity_on_planted_data() -> None:
    counts, track_genres = _planted_next_track()
    data = _planted_data(counts, track_genres)
    fitted = fit(data.holdout.train, ModelParams(factors=16, iterations=10), num_threads=1)
    got = next_track_metrics(data, fitted)
    assert set(got) == {NEXT_HIT, "next_hit_popularity", "next_hit_genre_popularity"}
    assert got[NEXT_HIT] > 1.5 * got["next_hit_popularity"]
    assert got[NEXT_HIT] > 1.2 * got["next_hit_genre_popularity"]
    assert next_track_metrics(data, None).keys() == got.keys() - {NEXT_HIT}


def test_dot_scoring_beats_popularity_where_cosine_loses_to_it() -> None:
    """Popular tracks inside each block (as on the simulator's data): the published default,
    the dot product of item factors, keeps the popularity that the vectors' length carries and
    beats both baselines; cosine normalises it away and falls behind popularity."""
    counts, track_genres = _planted_next_track(per_block=40, per_user=5, zipf=1.2)
    data = _planted_data(counts, track_genres)
    fitted = fit(data.holdout.train, ModelParams(factors=16, iterations=10), num_threads=1)
    assert load_config().publish.similar_scoring == "dot"
    dot = next_track_metrics(data, fitted, "dot")
    cosine = model_next_hit(data, fitted, "cosine")
    assert dot[NEXT_HIT] > 1.2 * dot["next_hit_popularity"]
    assert dot[NEXT_HIT] > 1.05 * dot["next_hit_genre_popularity"]
    assert cosine < dot["next_hit_popularity"] < dot[NEXT_HIT]

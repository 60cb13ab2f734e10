import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k

from ml.config import Evaluation, ModelParams
from ml.evaluate import NotEnoughData, leave_k_out, ranking_metrics
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

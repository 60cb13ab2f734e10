import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.topk import topk as implicit_topk

from ml.topk import top_k


def _case(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, 8)).astype(np.float32)
    query = rng.standard_normal((n_users, 8)).astype(np.float32)
    heard_per_user = np.minimum(rng.zipf(1.5, n_users), n_items)  # a long tail of heavy users
    rows = np.repeat(np.arange(n_users), heard_per_user)
    cols = np.concatenate([rng.choice(n_items, h, replace=False) for h in heard_per_user])
    exclude = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), (n_users, n_items))
    return items, query, exclude


@pytest.mark.parametrize(("n_items", "k"), [(300, 10), (12, 10)])
def test_same_lists_as_implicits_filtered_topk(n_items: int, k: int) -> None:
    items, query, exclude = _case(500, n_items, seed=n_items)
    ids, scores = top_k(items, query, k, exclude)
    expected_ids, expected_scores = implicit_topk(items, query, k, filter_query_items=exclude)
    filtered = expected_scores <= -1e38
    np.testing.assert_array_equal(ids, np.where(filtered, -1, expected_ids))
    np.testing.assert_allclose(scores[~filtered], expected_scores[~filtered], rtol=1e-6)
    assert np.isneginf(scores[filtered]).all()
    heard = [set(exclude[i].indices) for i in range(500)]
    assert all(not (set(row[row >= 0]) & heard[i]) for i, row in enumerate(ids))


def test_without_exclusions_and_without_queries() -> None:
    items, query, _ = _case(20, 50, seed=1)
    ids, _ = top_k(items, query, 5)
    np.testing.assert_array_equal(ids, implicit_topk(items, query, 5)[0])
    empty_ids, _ = top_k(items, query[:0], 5)
    assert empty_ids.shape == (0, 5)

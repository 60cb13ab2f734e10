import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.topk import topk as implicit_topk

from ml import topk
from ml.topk import top_k, top_k_ranked


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


def test_the_unfiltered_tier_ranked_in_small_chunks_of_users_is_the_same(monkeypatch) -> None:
    """top_k's light users are ranked a chunk at a time (memory): the lists do not depend on it."""
    items, query, exclude = _case(500, 300, seed=4)
    whole = top_k(items, query, 10, exclude)
    monkeypatch.setattr(topk, "RANKED_CHUNK", 7)
    for mine, theirs in zip(top_k(items, query, 10, exclude), whole, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_without_exclusions_and_without_queries() -> None:
    items, query, _ = _case(20, 50, seed=1)
    ids, _ = top_k(items, query, 5)
    np.testing.assert_array_equal(ids, implicit_topk(items, query, 5)[0])
    empty_ids, _ = top_k(items, query[:0], 5)
    assert empty_ids.shape == (0, 5)


def test_ranked_lists_in_small_chunks_of_users_are_the_same(monkeypatch) -> None:
    """top_k_ranked ranks users a chunk at a time (memory): the lists do not depend on it."""
    _, _, exclude = _case(500, 60, seed=5)
    rng = np.random.default_rng(5)
    rankings = np.argsort(rng.random((4, 60)), axis=1)
    classes = rng.integers(0, 4, 500)
    whole = top_k_ranked(rankings, classes, 10, exclude)
    monkeypatch.setattr(topk, "RANKED_CHUNK", 7)
    np.testing.assert_array_equal(top_k_ranked(rankings, classes, 10, exclude), whole)
    for i in range(500):  # each row: its class's ranking minus what it heard, in order
        unheard = [t for t in rankings[classes[i]] if t not in set(exclude[i].indices)][:10]
        np.testing.assert_array_equal(whole[i][: len(unheard)], unheard)
        assert (whole[i][len(unheard) :] == -1).all()


def test_queries_settle_in_a_growing_head_then_all_items_with_exact_lists(monkeypatch) -> None:
    """Long vectors for a few popular items: most queries settle against the smallest head,
    some need the larger one, the rest every item; the lists are implicit's all the same."""
    rng = np.random.default_rng(9)
    n_items = 6000
    lengths = rng.pareto(1.5, n_items).astype(np.float32) + 0.1
    items = rng.standard_normal((n_items, 8)).astype(np.float32) * lengths[:, None]
    query = rng.standard_normal((400, 8)).astype(np.float32)
    _, _, exclude = _case(400, n_items, seed=9)
    ranked: list[int] = []  # the items each pass ranked against
    real = topk._top_k_all

    def spy(items, query, k, exclude, num_threads):
        ranked.append(len(items))
        return real(items, query, k, exclude, num_threads)

    monkeypatch.setattr(topk, "_top_k_all", spy)
    ids, scores = top_k(items, query, 10, exclude)
    assert ranked == [60, 600, n_items]  # all three passes ran
    expected_ids, expected_scores = implicit_topk(items, query, 10, filter_query_items=exclude)
    filtered = expected_scores <= -1e38  # implicit's filtered slots: -1 / -inf here
    np.testing.assert_array_equal(ids, np.where(filtered, -1, expected_ids))
    np.testing.assert_allclose(scores[~filtered], expected_scores[~filtered], rtol=1e-5)

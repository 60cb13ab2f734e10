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


def _passes(monkeypatch) -> list[tuple[int, int]]:
    """(items, rows) of every pass top_k ranks: the heads (numpy), then every item (implicit)."""
    passes: list[tuple[int, int]] = []
    head_ranked, top_k_all = topk._head_ranked, topk._top_k_all

    def heads(items, head, query, k, exclude):
        passes.append((len(head), len(query)))
        return head_ranked(items, head, query, k, exclude)

    def every(items, query, k, exclude, num_threads):
        passes.append((len(items), len(query)))
        return top_k_all(items, query, k, exclude, num_threads)

    monkeypatch.setattr(topk, "_head_ranked", heads)
    monkeypatch.setattr(topk, "_top_k_all", every)
    return passes


def test_queries_settle_in_a_growing_head_then_all_items_with_exact_lists(monkeypatch) -> None:
    """Long vectors for a few popular items: most queries settle against the smallest head,
    some need the larger ones, the rest every item; the lists are implicit's all the same."""
    rng = np.random.default_rng(9)
    n_items = 6000
    lengths = rng.pareto(1.5, n_items).astype(np.float32) + 0.1
    items = rng.standard_normal((n_items, 8)).astype(np.float32) * lengths[:, None]
    query = rng.standard_normal((400, 8)).astype(np.float32)
    _, _, exclude = _case(400, n_items, seed=9)
    passes = _passes(monkeypatch)
    ids, scores = top_k(items, query, 10, exclude)
    assert [size for size, _ in passes] == [60, 120, 180, 600, n_items]  # every pass ran
    assert [rows for _, rows in passes] == sorted(rows for _, rows in passes)[::-1]
    expected_ids, expected_scores = implicit_topk(items, query, 10, filter_query_items=exclude)
    filtered = expected_scores <= -1e38  # implicit's filtered slots: -1 / -inf here
    np.testing.assert_array_equal(ids, np.where(filtered, -1, expected_ids))
    np.testing.assert_allclose(scores[~filtered], expected_scores[~filtered], rtol=1e-5)


def brute_force(
    items: np.ndarray, query: np.ndarray, k: int, exclude: sp.csr_matrix | None
) -> tuple[np.ndarray, np.ndarray]:
    """Every score (implicit's own, from one full ranking), the heard ones dropped, each row
    fully sorted by score then column, both descending, and cut at k."""
    n_items = len(items)
    found, values = implicit_topk(items, query, n_items)
    scores = np.empty((len(query), n_items))
    np.put_along_axis(scores, np.asarray(found, dtype=np.int64), values, axis=1)
    if exclude is not None:
        scores[exclude.toarray() != 0] = -np.inf
    order = np.lexsort((-np.broadcast_to(np.arange(n_items), scores.shape), -scores), axis=1)
    best = np.take_along_axis(scores, order, axis=1)[:, :k]
    return np.where(np.isfinite(best), order[:, :k], -1), best


def _tied_case(seed: int, n_groups: int = 1500) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Items in groups of equal vectors (every score of a group ties), with a long tail of
    lengths (the pruned passes run), and users with few to many heard items."""
    rng = np.random.default_rng(seed)
    lengths = rng.pareto(1.5, n_groups).astype(np.float32) + 0.1
    vectors = rng.standard_normal((n_groups, 8)).astype(np.float32) * lengths[:, None]
    items = np.repeat(vectors, rng.integers(1, 6, n_groups), axis=0)
    items = items[rng.permutation(len(items))]  # a group's columns apart
    _, query, exclude = _case(400, len(items), seed)
    return items, query, exclude


@pytest.mark.parametrize(("k", "seed"), [(10, 1), (100, 2), (100, 3), (250, 4)])
def test_deep_lists_with_ties_are_the_full_sort(k: int, seed: int) -> None:
    """Pruned or not, every row is its unheard items sorted by score then column (both
    descending) and cut at k, also where the cut falls inside a group of equal scores."""
    items, query, exclude = _tied_case(seed)
    ids, scores = top_k(items, query, k, exclude)
    expected_ids, expected_scores = brute_force(items, query, k, exclude)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    cut = expected_scores[:, k - 1]  # the case has what it is for: cuts inside ties
    after = brute_force(items, query, k + 1, exclude)[1][:, k]
    assert (cut == after).sum() >= 5
    ids, scores = top_k(items, query, k)  # and without exclusions
    np.testing.assert_array_equal(ids, brute_force(items, query, k, None)[0])


def test_deep_lists_settled_in_a_head_are_the_full_sort(monkeypatch) -> None:
    """At k = 100 every row is tried against the heads (1% to 10% of the items, the longest
    vectors), most settle there, and the lists are the full sort's."""
    items, query, exclude = _tied_case(5, n_groups=6000)
    passes = _passes(monkeypatch)
    ids, scores = top_k(items, query, 100, exclude)
    expected_ids, expected_scores = brute_force(items, query, 100, exclude)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    heads = [int(np.ceil(len(items) * share)) for share in (0.01, 0.02, 0.03, 0.1)]
    assert [size for size, _ in passes] == [*heads, len(items)]
    assert passes[0][1] == 400 and passes[-1][1] < 10  # few rows reach every item

import numpy as np
import scipy.sparse as sp

from ml.config import load_config
from ml.families.factors import REFIT_ITERATIONS, fit_factors
from ml.interactions import build_interactions
from ml.params import AlsParams
from ml.split import split

PARAMS = AlsParams(factors=8, iterations=5)


def _counts(structured_marts) -> sp.csr_matrix:
    m = structured_marts
    return build_interactions(m.listen_user, m.listen_track, m.listen_count).matrix


def test_similar_is_the_exact_top_k_by_dot_product_without_the_track_itself(
    structured_marts,
) -> None:
    model = fit_factors(_counts(structured_marts), PARAMS, num_threads=1)
    ids, scores = model.similar(10)
    vectors = model.model.item_factors.astype(np.float64)
    expected = vectors @ vectors.T
    np.fill_diagonal(expected, -np.inf)
    assert ids.shape == scores.shape == (len(vectors), 10)
    assert not (ids == np.arange(len(vectors))[:, None]).any()
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, 1), rtol=1e-4, atol=1e-6)
    tenth = -np.sort(-expected, axis=1)[:, 9]
    np.testing.assert_allclose(scores[:, -1], tenth, rtol=1e-4, atol=1e-6)  # none better left
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_a_tiny_catalog_is_fine_and_the_mllib_scoring_is_configurable(structured_marts) -> None:
    model = fit_factors(_counts(structured_marts), PARAMS, num_threads=1)
    config = load_config(overrides=["publish.similar_scoring='cosine'"])
    assert config.publish.similar_scoring == "cosine"
    model.model.item_factors = model.model.item_factors[:1]
    ids, _ = model.similar(10)
    assert ids.shape == (1, 0)


def test_a_fit_from_a_start_continues_the_training_split_fit_on_all_data(structured_marts) -> None:
    counts = _counts(structured_marts)
    train = split((counts, None), load_config().evaluation).train  # the holdout's
    start = fit_factors(train, PARAMS, num_threads=1)
    before = start.model.item_factors.copy()
    warm = fit_factors(counts, PARAMS, num_threads=1, start=start)
    again = fit_factors(counts, PARAMS, num_threads=1, start=start)
    assert warm.warm_start and warm.model is not start.model
    assert warm.model.iterations == PARAMS.iterations  # the saved model keeps the parameters
    np.testing.assert_array_equal(start.model.item_factors, before)  # the start is untouched
    np.testing.assert_array_equal(warm.model.item_factors, again.model.item_factors)  # determinism
    assert not np.array_equal(warm.model.item_factors, before)  # it did learn on all data
    assert PARAMS.iterations > REFIT_ITERATIONS

    # its lists are close to a cold refit's: closer than a cold fit with another seed is
    cold = fit_factors(counts, PARAMS, num_threads=1)
    other_seed = fit_factors(counts, AlsParams(factors=8, iterations=5, random_state=7), 1)
    rows = np.arange(counts.shape[0])

    def overlap(a, b) -> float:
        ids_a, _ = a.recommend(rows, counts, 10)
        ids_b, _ = b.recommend(rows, counts, 10)
        return np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ids_a, ids_b, strict=True)])

    assert overlap(warm, cold) > overlap(other_seed, cold)


def test_a_fit_from_a_start_is_a_cold_fit_without_a_matching_start(structured_marts) -> None:
    counts = _counts(structured_marts)
    cold = fit_factors(counts, PARAMS, num_threads=1)
    assert not fit_factors(counts, PARAMS, num_threads=1, start=None).warm_start
    other = fit_factors(counts[:, :-1], PARAMS, num_threads=1)  # one track fewer: shapes differ
    fallback = fit_factors(counts, PARAMS, num_threads=1, start=other)
    assert not fallback.warm_start
    np.testing.assert_array_equal(fallback.model.item_factors, cold.model.item_factors)
    wider = fit_factors(counts, AlsParams(factors=16, iterations=5), num_threads=1, start=cold)
    assert not wider.warm_start and wider.model.item_factors.shape[1] == 16

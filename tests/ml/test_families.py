import itertools
import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from ml import families
from ml.families import (
    LASTFM_ALS,
    AlsParams,
    BprParams,
    EaseParams,
    FamilySkipped,
    ItemKnnParams,
    LmfParams,
    OverBudget,
    base,
    default_search_space,
    parse_params,
)
from ml.families.base import MODEL_FILE, single_threaded_blas
from ml.families.factors import confidence
from ml.interactions import build_interactions
from ml.params import ModelParams

SMALL = [
    AlsParams(factors=16, iterations=10, alpha=5.0, regularization=1.0),
    BprParams(factors=16, iterations=60, learning_rate=0.05),
    LmfParams(factors=16, iterations=30),
    ItemKnnParams(weighting="bm25", neighbours=50),
    ItemKnnParams(weighting="cosine", neighbours=50),
    ItemKnnParams(weighting="tfidf", neighbours=50),
    EaseParams(regularization=100.0),
]
IDS = [p.label() for p in SMALL]


@pytest.fixture(scope="module")
def counts(structured_marts) -> sp.csr_matrix:
    m = structured_marts
    return build_interactions(m.listen_user, m.listen_track, m.listen_count).matrix


@dataclass(frozen=True)
class Holdout:
    train: sp.csr_matrix
    test: sp.csr_matrix
    eval_rows: np.ndarray


@pytest.fixture(scope="module")
def holdout(counts) -> Holdout:
    """Two random (user, track) pairs hidden per user with at least five tracks."""
    rng = np.random.default_rng(7)
    coo = counts.tocoo()
    keys = rng.random(coo.nnz)
    order = np.lexsort((keys, coo.row))  # per user, in random order
    first = np.searchsorted(coo.row[order], coo.row[order])  # each pair's user's first slot
    rank = np.arange(coo.nnz) - first
    sizes = np.diff(counts.indptr)[coo.row[order]]
    hide = np.zeros(coo.nnz, dtype=bool)
    hide[order] = (rank < 2) & (sizes >= 5)

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=counts.shape)

    test = part(hide)
    return Holdout(part(~hide), test, np.flatnonzero(np.diff(test.indptr)))


def hit_rate(ids: np.ndarray, test: sp.csr_matrix, rows: np.ndarray) -> float:
    held = test[rows]
    hits = (held[np.arange(len(rows))[:, None], np.maximum(ids, 0)].toarray() != 0) & (ids >= 0)
    return float(hits.sum() / held.nnz)


@pytest.mark.parametrize("params", SMALL, ids=IDS)
def test_each_family_finds_the_planted_scenes_far_better_than_random(holdout, params) -> None:
    model = families.fit(holdout.train, params, num_threads=1)
    rows = holdout.eval_rows
    ids, scores = model.recommend(rows, holdout.train, 10)
    assert ids.shape == scores.shape == (len(rows), 10)
    unheard = holdout.train.shape[1] - np.diff(holdout.train[rows].indptr)
    random_rate = float(np.mean(10 / unheard))  # expected recall@10 of a random list
    assert hit_rate(ids, holdout.test, rows) > 4 * random_rate
    assert (np.diff(scores, axis=1) <= 1e-9).all()  # best first


@pytest.mark.parametrize("params", SMALL, ids=IDS)
def test_lists_leave_out_what_was_heard_and_end_in_minus_one(counts, params) -> None:
    model = families.fit(counts, params, num_threads=1)
    n_tracks = counts.shape[1]
    heard = counts.tolil()
    heard[0, :] = 1.0  # user 0 heard everything, user 1 all but three tracks
    heard[1, :] = 1.0
    heard[1, [5, 50, 300]] = 0.0
    heard = heard.tocsr()
    heard.eliminate_zeros()
    rows = np.arange(40)
    ids, scores = model.recommend(rows, heard, 10)
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()
    assert set(ids[1][ids[1] >= 0]) <= {5, 50, 300} and (ids[1][3:] == -1).all()
    listed = (heard[rows[:, None], np.maximum(ids, 0)].toarray() != 0) & (ids >= 0)
    assert not listed.any()
    assert ((ids >= 0) == np.isfinite(scores)).all()
    similar, _ = model.similar(5)
    assert similar.shape == (n_tracks, 5)
    assert not (similar == np.arange(n_tracks)[:, None]).any()


@pytest.mark.parametrize("params", SMALL, ids=IDS)
def test_a_saved_model_loads_back_without_pickle_and_gives_the_same_lists(
    counts, tmp_path, params
) -> None:
    model = families.fit(counts, params, num_threads=1)
    model.save(tmp_path / "artifact")
    with np.load(tmp_path / "artifact" / MODEL_FILE, allow_pickle=False) as saved:
        assert all(saved[name].dtype != object for name in saved.files)
    loaded = families.load(tmp_path / "artifact")
    assert loaded.params == params
    rows = np.arange(counts.shape[0])
    for got, want in zip(
        (loaded.recommend(rows, counts, 10), loaded.similar(10), loaded.fold_in(counts[[3]], 10)),
        (model.recommend(rows, counts, 10), model.similar(10), model.fold_in(counts[[3]], 10)),
        strict=True,
    ):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1])


def test_ease_matches_its_closed_form_computed_naively() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 9)) < 0.4) * rng.integers(1, 6, (30, 9))
    counts = sp.csr_matrix(dense.astype(np.float32))
    for weighting, x in (("binary", (dense > 0) * 1.0), ("log", np.log1p(dense))):
        params = EaseParams(regularization=2.0, weighting=weighting)
        p = np.linalg.inv(x.T @ x + 2.0 * np.eye(9))
        b = np.eye(9) - p / np.diag(p)[None, :]
        model = families.fit(counts, params, num_threads=1)
        np.testing.assert_allclose(model.weights, b, atol=1e-5)
        np.testing.assert_allclose(np.diag(model.weights), 0)
        ids, scores = model.recommend(np.arange(30), counts, 9)
        expected = np.where(dense > 0, -np.inf, x @ b)
        for user in range(30):
            got = ids[user][ids[user] >= 0]
            np.testing.assert_allclose(scores[user][: len(got)], expected[user, got], atol=1e-5)
            np.testing.assert_allclose(
                np.sort(scores[user][: len(got)]),
                np.sort(expected[user][np.isfinite(expected[user])]),
                atol=1e-5,
            )


def test_ease_is_skipped_above_max_tracks(counts) -> None:
    with pytest.raises(FamilySkipped, match="max_tracks 100"):
        families.fit(counts, EaseParams(max_tracks=100))


@pytest.mark.parametrize("params", SMALL[:3], ids=IDS[:3])
def test_a_factor_fit_past_its_deadline_stops_after_one_iteration(counts, params) -> None:
    with pytest.raises(OverBudget, match="stopped after 1 of"):
        families.fit(counts, params, deadline=time.monotonic() - 1.0)  # clock: long past
    in_time = families.fit(counts, params, deadline=time.monotonic() + 3600.0)  # clock: far off
    assert in_time.n_tracks == counts.shape[1]


def test_ease_does_not_start_an_inversion_that_would_end_past_its_deadline(counts) -> None:
    with pytest.raises(OverBudget, match="not started: its inversion would take"):
        families.fit(counts, EaseParams(), deadline=time.monotonic())  # clock: now, no time left
    far_off = time.monotonic() + 3600.0  # clock: an hour for a fit of seconds
    assert families.fit(counts, EaseParams(), deadline=far_off).n_tracks


@pytest.mark.parametrize("params", SMALL[3:], ids=IDS[3:])
def test_fold_in_of_a_users_row_is_their_list_where_the_family_is_exact(counts, params) -> None:
    model = families.fit(counts, params, num_threads=1)
    rows = np.arange(0, counts.shape[0], 37)
    ids, scores = model.recommend(rows, counts, 10)
    for i, row in enumerate(rows):
        one_ids, one_scores = model.fold_in(counts[[row]], 10)
        np.testing.assert_allclose(one_scores, scores[i], rtol=1e-5)
        assert set(one_ids) == set(ids[i])


@pytest.mark.parametrize("weighting", ["bm25", "cosine", "tfidf"])
def test_item_knn_lists_are_the_heard_counts_times_the_kept_similarities(counts, weighting) -> None:
    """The oracle in plain numpy: X[rows] S, heard and unreached (score 0) tracks left out;
    similar: each row of S without the diagonal."""
    model = families.fit(counts, ItemKnnParams(weighting=weighting, neighbours=5), num_threads=1)
    s = model.model.similarity.toarray()
    rows = np.arange(0, counts.shape[0], 7)
    ids, scores = model.recommend(rows, counts, 30)
    expected = counts[rows].toarray() @ s
    expected[(counts[rows].toarray() > 0) | (expected <= 0)] = -np.inf
    assert (ids == -1).any()  # five neighbours: some users run out of candidates
    for i in range(len(rows)):
        want = np.sort(expected[i][np.isfinite(expected[i])])[::-1][:30]
        np.testing.assert_allclose(scores[i][: len(want)], want, rtol=1e-5)
        assert (ids[i][len(want) :] == -1).all()
        np.testing.assert_allclose(expected[i, ids[i][: len(want)]], want, rtol=1e-5)
    similar, similar_scores = model.similar(3)
    np.fill_diagonal(s, 0)
    top = -np.sort(-np.where(s > 0, s, -np.inf), axis=1)[:, :3]
    np.testing.assert_allclose(similar_scores, top, rtol=1e-6)
    assert ((similar >= 0) == np.isfinite(top)).all()


@pytest.mark.parametrize("params", SMALL[:3], ids=IDS[:3])
def test_fold_in_of_factor_families_finds_held_out_tracks_without_the_row(holdout, params) -> None:
    """ALS solves the user; BPR and LMF approximate them by the tracks heard: still far
    better than random on the planted scenes."""
    model = families.fit(holdout.train, params, num_threads=1)
    rows = holdout.eval_rows
    ids = np.stack([model.fold_in(holdout.train[[row]], 10)[0] for row in rows])
    assert (ids >= 0).all()
    listed = holdout.train[rows[:, None], ids].toarray() != 0
    assert not listed.any()
    unheard = holdout.train.shape[1] - np.diff(holdout.train[rows].indptr)
    assert hit_rate(ids, holdout.test, rows) > 4 * float(np.mean(10 / unheard))


def test_als_is_implicits_fit_on_confidences_and_continues_from_a_start(counts, holdout) -> None:
    params = SMALL[0]
    ours = families.fit(counts, params, num_threads=1)
    knobs = {"factors", "regularization", "alpha", "iterations", "random_state"}
    theirs = AlternatingLeastSquares(**params.model_dump(include=knobs), num_threads=1)
    with single_threaded_blas():
        theirs.fit(confidence(counts, params), show_progress=False)
    np.testing.assert_array_equal(ours.model.item_factors, theirs.item_factors)
    start = families.fit(holdout.train, params, num_threads=1)
    warm = families.fit(counts, params, num_threads=1, start=start)
    assert warm.warm_start and not ours.warm_start
    assert not families.fit(
        counts, params, num_threads=1, start=families.fit(counts, SMALL[3], num_threads=1)
    ).warm_start


def test_params_json_round_trips_and_legacy_als_rows_parse() -> None:
    for params in SMALL:
        row = json.loads(json.dumps(params.to_json()))
        assert row["model"] == row["family"] == params.family
        assert parse_params(row) == params
    legacy = {"model": "als", "use_gpu": False, **ModelParams(factors=64).model_dump()}
    assert parse_params(legacy) == AlsParams(factors=64)
    assert parse_params({"factors": 8}) == AlsParams(factors=8)
    with pytest.raises(ValueError, match="unknown model family"):
        parse_params({"family": "svd"})
    with pytest.raises(ValueError):
        parse_params({"family": "bpr", "factors": "many"})


def test_every_point_of_the_search_spaces_is_valid() -> None:
    for family in families.FAMILIES:
        space = default_search_space(family)
        for values in itertools.product(*space.values()):
            parse_params({"family": family, **dict(zip(space, values, strict=True))})
    assert LASTFM_ALS.confidence == "bm25" and (LASTFM_ALS.bm25_k1, LASTFM_ALS.bm25_b) == (100, 0.8)
    assert LASTFM_ALS.factors == 128 and LASTFM_ALS.alpha == 1.0


def test_small_chunks_give_ease_the_same_lists(counts, monkeypatch) -> None:
    """Chunk edges (users per score block, Gram columns, mirrored rows) change nothing."""
    params = SMALL[-1]
    model = families.fit(counts, params, num_threads=1)
    rows = np.arange(counts.shape[0])
    whole = model.recommend(rows, counts, 10), model.similar(10)
    for module in ("base", "ease"):
        monkeypatch.setattr(f"ml.families.{module}.CHUNK_CELLS", 997)
    chunked = families.fit(counts, params, num_threads=1)
    np.testing.assert_allclose(chunked.weights, model.weights, atol=1e-6)
    for got, want in zip(
        (chunked.recommend(rows, counts, 10), chunked.similar(10)), whole, strict=True
    ):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_als_fit_on_a_sample_of_users_warm_starts_the_fit_on_everyone(holdout) -> None:
    """Candidates are fit on a sample of users; the winner's refit on all users starts from
    the sample's track factors, every user's factors solved from them (implicit's own)."""
    params = SMALL[0]
    n_users = holdout.train.shape[0]
    sample = np.sort(np.random.default_rng(2).choice(n_users, n_users // 3, replace=False))
    start = families.fit(holdout.train[sample], params, num_threads=1)
    warm = families.fit(holdout.train, params, num_threads=1, start=start)
    cold = families.fit(holdout.train, params, num_threads=1)
    assert warm.warm_start and warm.model.user_factors.shape == (n_users, params.factors)
    assert start.model.user_factors.shape[0] == len(sample)  # the start is left unchanged
    rows = holdout.eval_rows
    rates = [
        hit_rate(m.recommend(rows, holdout.train, 10)[0], holdout.test, rows) for m in (warm, cold)
    ]
    assert rates[0] >= 0.9 * rates[1], rates  # two iterations from the sample: about as good


@pytest.mark.parametrize("budget", [1, 3, 7, 1_000])
def test_sparse_top_k_by_blocks_of_rows_equals_one_sort(monkeypatch, budget) -> None:
    """Sorting a block of rows at a time (memory) keeps every row's list: ties to the lower
    column, rows longer than a block, empty rows."""
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(12, 9)).astype(np.float32)  # many ties, some empty cells
    dense[4] = 0  # an empty row
    dense[7] = np.arange(1, 10)  # a row longer than the small budgets
    matrix = sp.csr_matrix(dense)
    expected = [sorted(np.flatnonzero(row), key=lambda c, r=row: (-r[c], c))[:4] for row in dense]

    monkeypatch.setattr(base, "SPARSE_CHUNK", budget)
    ids, scores = base.sparse_top_k(matrix, 4)

    for row, want in enumerate(expected):
        got = [int(c) for c in ids[row] if c >= 0]
        assert got == want, row
        np.testing.assert_array_equal(scores[row, : len(want)], dense[row, want])
        assert np.isneginf(scores[row, len(want) :]).all()

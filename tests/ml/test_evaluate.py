from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k

from ml import evaluate, families  # evaluate.test_*: imported bare, pytest would collect them
from ml.config import Evaluation
from ml.evaluate import (
    EvaluationData,
    Scored,
    evaluate_baselines,
    evaluate_model,
    format_table,
    judge,
)
from ml.families.base import single_threaded_blas
from ml.interactions import build_interactions, catalog_from_frames
from ml.params import AlsParams, EaseParams
from ml.quality import ACCURACY, SEGMENTS
from ml.split import Fold, split
from tests.ml.synthetic import SyntheticMarts, catalog_frames

ALS = AlsParams(factors=32, confidence="bm25", alpha=1.0, regularization=1.0)
SETTINGS = Evaluation(resamples=200)


def _data(marts: SyntheticMarts, settings: Evaluation = SETTINGS) -> EvaluationData:
    """The synthetic marts as ml.train reads them: listens with first-listen times, the users'
    favorite genres and the tracks' genres (ml.interactions' own catalog code)."""
    assert marts.event_user is not None and marts.event_track is not None
    interactions = build_interactions(
        marts.event_user, marts.event_track, np.ones(len(marts.event_user)), marts.event_at
    )
    users, bridge = catalog_frames(marts)
    catalog = catalog_from_frames(interactions, users, bridge, len(marts.track_ids))
    return EvaluationData(
        split(interactions, settings),
        catalog.favorite_genre_of(interactions.user_ids),
        catalog.track_genres,
        catalog.n_catalog_tracks,
        settings,
    )


@pytest.fixture(scope="module")
def data(structured_marts: SyntheticMarts) -> EvaluationData:
    return _data(structured_marts)


def test_metrics_by_hand() -> None:
    test = sp.csr_matrix((np.ones(3), ([0, 0, 1], [1, 5, 2])), shape=(2, 10), dtype=np.float32)
    fold = Fold(sp.csr_matrix((2, 10), dtype=np.float32), test, np.array([0, 1]))
    ids = np.array([[5, 3, 1], [0, 2, -1]])
    got, per_user = judge(ids, fold, k=3, n_catalog_tracks=10)
    assert got["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)  # hits / k
    assert got["recall"] == pytest.approx(1.0)  # hits / held-out tracks
    assert got["map"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 1) / 2)
    ndcg_0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg_1 = (1 / np.log2(3)) / 1
    assert got["ndcg"] == pytest.approx((ndcg_0 + ndcg_1) / 2)
    np.testing.assert_allclose(per_user["ndcg"], [ndcg_0, ndcg_1])
    assert got["coverage"] == pytest.approx(5 / 10)  # distinct tracks listed / catalog


@pytest.mark.parametrize("kind", ["holdout", "time"])
def test_metrics_agree_with_implicits_own(structured_marts: SyntheticMarts, kind: str) -> None:
    """MAP and NDCG are implicit's definitions; implicit's "precision" is all hits over the sum
    of min(k, held-out tracks) (https://github.com/benfred/implicit/issues/412), our recall
    when every user holds out the same number, at most k. implicit ranks with its own filtered
    recommend: this also checks our top-k lists."""
    m = structured_marts
    interactions = build_interactions(
        m.event_user, m.event_track, np.ones(len(m.event_user)), m.event_at
    )
    times = None if kind == "holdout" else interactions.first_seen
    found = split((interactions.matrix, times), Evaluation(max_eval_users=10**6, seed=3))
    assert found.kind == kind
    fold = found.validation()
    fitted = families.fit(fold.train, ALS, num_threads=1)
    judged = np.zeros(fold.train.shape[0])
    judged[fold.eval_rows] = 1
    truth = (sp.diags(judged) @ fold.test).tocsr()  # the judged users' held-out pairs only
    truth.eliminate_zeros()
    with single_threaded_blas():
        theirs = ranking_metrics_at_k(
            fitted.model, fold.train, truth, K=10, show_progress=False, num_threads=1
        )
    ids, _ = fitted.recommend(fold.eval_rows, fold.train, 10)
    ours, per_user = judge(ids, fold, 10, interactions.n_tracks)
    assert ours["map"] == pytest.approx(theirs["map"], rel=1e-6)
    assert ours["ndcg"] == pytest.approx(theirs["ndcg"], rel=1e-6)
    held_out = np.diff(fold.test[fold.eval_rows].indptr)
    hits = per_user["precision"] * 10
    pooled = hits.sum() / np.minimum(10, held_out).sum()
    assert pooled == pytest.approx(theirs["precision"], rel=1e-6)
    if kind == "holdout":  # 2 held out per user: recall is implicit's precision
        assert ours["recall"] == pytest.approx(theirs["precision"], rel=1e-6)
        assert ours["precision"] == pytest.approx(theirs["precision"] * 2 / 10, rel=1e-6)


def test_candidates_are_judged_per_user_on_validation(data: EvaluationData) -> None:
    assert data.split.kind == "time"  # the synthetic histories span days
    users = len(data.split.valid_rows)
    baselines = evaluate_baselines(data)
    assert set(baselines) == {"popularity", "genre_popularity"}
    scored, fitted = evaluate_model(data, ALS, "als")
    assert scored.error is None and fitted is not None and scored.family == "als"
    assert fitted.params == ALS and scored.fit_seconds > 0
    for result in (*baselines.values(), scored):
        assert set(result.metrics) == {*ACCURACY, "coverage"}
        assert set(result.per_user) == set(ACCURACY)
        for name, values in result.per_user.items():
            assert values.shape == (users,)
            assert result.metrics[name] == pytest.approx(values.mean())
    # the collaborative model beats both baselines on the planted scenes, by a real margin
    for baseline in baselines.values():
        gain = data.gain(scored, baseline, "ndcg")
        assert gain.mean == pytest.approx(scored.metrics["ndcg"] - baseline.metrics["ndcg"])
        assert 0 < gain.low <= gain.mean <= gain.high
    assert baselines["genre_popularity"].metrics["ndcg"] > baselines["popularity"].metrics["ndcg"]
    again, _ = evaluate_model(data, ALS, "again")
    np.testing.assert_array_equal(again.per_user["ndcg"], scored.per_user["ndcg"])  # seeded


def test_validation_keeps_the_favorite_genre_rerank_depth_that_scores_best(
    data: EvaluationData,
) -> None:
    assert data.depths() == [0, 25, 50, 100]  # none, and the configured depths above k
    scored, fitted = evaluate_model(data, ALS, "als")
    assert fitted is not None
    fold = data.split.validation()
    by_depth = {  # each depth ranked on its own, not from the deepest ranking validation used
        depth: judge(data.lists(fitted, fold, [depth])[0], fold, data.k, data.n_catalog_tracks)[0]
        for depth in data.depths()
    }
    assert scored.metrics == by_depth[scored.depth]
    assert scored.metrics["ndcg"] == max(m["ndcg"] for m in by_depth.values())
    # without depths the model's own order is judged
    settings = data.settings.model_copy(update={"favorite_genre_depths": ()})
    plain, _ = evaluate_model(replace(data, settings=settings), ALS, "plain")
    assert plain.depth == 0 and plain.metrics == by_depth[0]


def test_a_family_that_cannot_fit_is_a_result_not_a_raise(data: EvaluationData) -> None:
    scored, fitted = evaluate_model(data, EaseParams(max_tracks=10), "ease")
    assert fitted is None and scored.metrics == {} and scored.per_user == {}
    assert scored.error is not None and scored.error.startswith("skipped: ")
    assert scored.score("ndcg") == float("-inf") and scored.family == "ease"


def test_the_serving_model_is_reported_on_test_with_intervals_and_segments(
    data: EvaluationData,
) -> None:
    fold = data.split.testing()
    _, start = evaluate_model(data, ALS, "als")
    lists, fitted = evaluate.lists_for_test(data, ("model", ALS, start), num_threads=1)
    assert fitted is not None and fitted.warm_start  # continued from the validation fit
    assert set(lists) == {"popularity", "genre_popularity", "model"}
    assert all(ids.shape == (len(fold.eval_rows), data.k) for ids in lists.values())
    report = evaluate.report_on_test(data, lists, "ndcg", "model")
    means = {
        name: judge(ids, fold, data.k, data.n_catalog_tracks)[0] for name, ids in lists.items()
    }
    for name, entry in report.items():
        assert entry["users"] == len(fold.eval_rows)
        for metric in ACCURACY:
            figure = entry[metric]
            assert figure["mean"] == pytest.approx(means[name][metric], abs=1e-6)
            assert figure["low"] <= figure["mean"] <= figure["high"]
        assert entry["coverage"] == pytest.approx(means[name]["coverage"])
        assert 0 <= entry["novelty"] <= 1 and 0 <= entry["diversity"] <= 1
        # segments by training tracks: every judged user in one, the means add up
        segments = entry["segments"]
        assert set(segments) <= set(SEGMENTS) and len(segments) >= 2
        assert sum(s["users"] for s in segments.values()) == entry["users"]
        weighted = sum(s["users"] * s["ndcg"]["mean"] for s in segments.values() if s["users"])
        assert weighted / entry["users"] == pytest.approx(entry["ndcg"]["mean"], abs=1e-5)
    served = report["model"]
    for baseline in ("popularity", "genre_popularity"):
        gain = served[f"gain_vs_{baseline}"]
        expected = means["model"]["ndcg"] - means[baseline]["ndcg"]
        assert gain["mean"] == pytest.approx(expected, abs=1e-5)
        assert 0 < gain["low"] <= gain["mean"] <= gain["high"]
    assert not any(key.startswith("gain_vs") for key in report["popularity"])


def test_without_a_serving_model_the_baselines_are_reported(data: EvaluationData) -> None:
    lists, fitted = evaluate.lists_for_test(data, None)
    assert fitted is None and set(lists) == {"popularity", "genre_popularity"}
    report = evaluate.report_on_test(data, lists, "ndcg", "genre_popularity")
    assert set(report["genre_popularity"]) >= {"gain_vs_popularity", "ndcg", "segments"}


def test_the_table_lists_every_candidate_and_says_what_the_metrics_mean() -> None:
    results = [
        Scored("popularity", {"precision": 0.1, "recall": 0.2, "map": 0.05, "ndcg": 0.12}),
        Scored("config [model]", {"ndcg": 0.2}, ALS, fit_seconds=1.25),
        Scored("ease defaults", {}, EaseParams(), error="skipped: too many tracks"),
    ]
    lines = format_table(results, 10, "ndcg").splitlines()
    assert lines[0].split()[:5] == ["candidate", "precision@10", "recall@10", "map@10", "ndcg@10"]
    assert lines[2].split()[:5] == ["popularity", "0.1000", "0.2000", "0.0500", "0.1200"]
    assert lines[3].startswith("config [model]") and "0.2000" in lines[3] and "1.2" in lines[3]
    assert ALS.label() in lines[3] and "skipped: too many tracks" in lines[4]
    assert "selection by ndcg@10" in lines[-1]

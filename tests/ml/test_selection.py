from datetime import date

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares

from ml.config import ModelParams, Search
from ml.evaluate import Scored
from ml.model import FittedModel
from ml.selection import (
    CHALLENGER,
    CHAMPION,
    REJECTED,
    SearchResult,
    challenger_params,
    decide,
    keep_if_best,
)

BASELINES = {
    "popularity": Scored("popularity", {"ndcg": 0.10}),
    "genre_popularity": Scored("genre_popularity", {"ndcg": 0.15}),
}


def als(name: str, ndcg: float, error: str | None = None) -> Scored:
    return Scored(name, {"ndcg": ndcg}, ModelParams(), error=error)


def test_a_challenger_is_promoted_only_with_the_margin() -> None:
    candidates = [als("champion", 0.20), als("c1", 0.203), als("c2", 0.25), als("c3", 0.21)]
    decision = decide(candidates, BASELINES, "ndcg", min_improvement=0.02)
    assert decision.serving == 2 and decision.promoted
    assert decision.statuses == (CHALLENGER, CHALLENGER, CHAMPION, CHALLENGER)
    assert "promoted" in decision.reason


def test_the_champion_stays_when_no_challenger_clears_the_margin() -> None:
    candidates = [als("champion", 0.20), als("c1", 0.2039), als("c2", 0.19)]
    decision = decide(candidates, BASELINES, "ndcg", min_improvement=0.02)
    assert decision.serving == 0 and not decision.promoted and decision.baseline is None
    assert decision.statuses == (CHAMPION, CHALLENGER, CHALLENGER)


def test_a_challenger_must_beat_both_baselines() -> None:
    weak_baselines = {
        "popularity": Scored("popularity", {"ndcg": 0.05}),
        "genre_popularity": Scored("genre_popularity", {"ndcg": 0.30}),
    }
    candidates = [als("champion", 0.31), als("c1", 0.29)]
    decision = decide(candidates, weak_baselines, "ndcg", 0.0)
    assert decision.serving == 0
    assert decision.statuses == (CHAMPION, REJECTED)


def test_when_the_champion_loses_to_a_baseline_a_valid_challenger_serves() -> None:
    candidates = [als("champion", 0.14), als("c1", 0.141), als("c2", 0.16)]
    decision = decide(candidates, BASELINES, "ndcg", min_improvement=0.5)
    assert decision.serving == 2 and decision.promoted
    assert decision.statuses == (REJECTED, REJECTED, CHAMPION)
    assert "champion lost" in decision.reason


def test_when_every_als_model_loses_the_better_baseline_is_published() -> None:
    candidates = [als("champion", 0.12), als("c1", 0.15), als("c2", 0.0, error="NaN")]
    decision = decide(candidates, BASELINES, "ndcg", 0.02)
    assert decision.serving is None and decision.baseline == "genre_popularity"
    assert decision.statuses == (REJECTED, REJECTED, REJECTED)
    assert "publishing genre_popularity" in decision.reason


def test_a_failed_champion_is_rejected_and_never_serves() -> None:
    candidates = [als("champion", 0.0, error="ValueError: NaN"), als("c1", 0.2)]
    decision = decide(candidates, BASELINES, "ndcg", 0.02)
    assert decision.serving == 1 and decision.statuses == (REJECTED, CHAMPION)
    with pytest.raises(ValueError):
        decide([], BASELINES, "ndcg", 0.02)


def test_challengers_change_one_parameter_and_start_with_the_configs() -> None:
    champion = ModelParams(factors=64, regularization=0.05, alpha=1.0, confidence="bm25")
    proposed = ModelParams(factors=128, iterations=25)
    search = Search(
        factors=(32, 64),
        regularization=(0.05, 1.0),
        iterations=(15,),
        alpha=(1.0,),
        confidence=("bm25", "log"),
    )
    day = date(2026, 11, 26)
    tried = challenger_params(champion, proposed, search, day)
    assert tried[0] == proposed
    assert set(tried[1:]) == {
        champion.model_copy(update={"factors": 32}),
        champion.model_copy(update={"regularization": 1.0}),
        champion.model_copy(update={"confidence": "log"}),
    }
    assert challenger_params(champion, proposed, search, day) == tried  # a rerun: same order
    assert challenger_params(champion, champion, search, day)[0] != champion


def test_the_search_holds_only_the_fits_that_can_serve() -> None:
    """ml.train keeps the champion's fit and the best challenger's so far: whatever the scores,
    the serving candidate's fit is still held, and never more than two."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.choice([0.12, 0.16, 0.2, 0.204, 0.25], size=rng.integers(1, 6))
        candidates = [als(f"c{i}", float(s)) for i, s in enumerate(scores)]
        found = SearchResult(candidates[:1], {0: _fit()})
        for i in range(1, len(candidates)):
            found.candidates.append(candidates[i])
            keep_if_best(found, i, _fit(), "ndcg")
            assert len(found.fits) <= 2 and 0 in found.fits
        decision = decide(candidates, BASELINES, "ndcg", min_improvement=0.02)
        assert decision.serving is None or decision.serving in found.fits


def _fit() -> FittedModel:
    return FittedModel(ModelParams(), AlternatingLeastSquares(), 0.0)

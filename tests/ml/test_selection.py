from datetime import UTC, date, datetime

import numpy as np
import pytest

from ml.config import Search, load_config
from ml.evaluate import Scored
from ml.intervals import difference
from ml.params import LASTFM_ALS, AlsParams, EaseParams, ItemKnnParams, Params
from ml.selection import (
    CHALLENGER,
    CHAMPION,
    REJECTED,
    SearchResult,
    challenger_params,
    decide,
    keep_if_best,
    model_run_rows,
    search,
)

N_USERS = 400
BOOTSTRAP = {"resamples": 300, "level": 0.95, "seed": 1}
RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.0, 0.3, N_USERS)  # the users' own ease: shared by every list


def scored(name: str, values: np.ndarray, params: Params | None = None, error=None) -> Scored:
    """A candidate judged on the same N_USERS validation users (ndcg per user)."""
    if error:
        return Scored(name, {}, params or AlsParams(), error=error)
    per_user = {"ndcg": np.asarray(values, dtype=np.float64)}
    return Scored(name, {"ndcg": float(per_user["ndcg"].mean())}, params, per_user=per_user)


def model(name: str, values: np.ndarray, **params) -> Scored:
    return scored(name, values, AlsParams(**params))


def noise(sd: float, seed: int) -> np.ndarray:
    """Zero-mean noise (exactly), so the planted means are the means."""
    values = np.random.default_rng(seed).normal(0.0, sd, N_USERS)
    return values - values.mean()


def baselines(popularity: np.ndarray, genre: np.ndarray) -> dict[str, Scored]:
    return {
        "popularity": scored("popularity", popularity),
        "genre_popularity": scored("genre_popularity", genre),
    }


BASELINES = baselines(BASE * 0.5, BASE)  # genre_popularity is the best baseline


def test_a_planted_real_gain_is_promoted_and_its_intervals_recorded() -> None:
    champion = BASE + 0.05 + noise(0.02, 1)
    small, large = champion + 0.01 + noise(0.01, 2), champion + 0.04 + noise(0.01, 3)
    candidates = [model("champion", champion), model("c1", small), model("c2", large)]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.serving == 2 and decision.promoted and decision.baseline is None
    assert decision.statuses == (CHALLENGER, CHALLENGER, CHAMPION)
    assert decision.reason.startswith("challenger c2 (als) ndcg") and "promoted" in decision.reason
    gain = decision.gains[2]["vs_champion"]
    alone = difference(large, champion, **BOOTSTRAP)  # paired, on the same users
    # the same resamples as its own bootstrap (all gains are drawn at once: the sums' order
    # may round differently)
    assert vars(gain) == pytest.approx(vars(alone), rel=1e-12, abs=1e-15)
    assert gain.mean == pytest.approx(0.04) and 0 < gain.low < gain.mean < gain.high
    vs_baseline = decision.gains[2]["vs_baseline"]
    assert vs_baseline.mean == pytest.approx(0.09) and vs_baseline.low > 0
    assert "vs_champion" not in decision.gains[0]  # the champion has only its baseline gain


def test_a_noisy_tiny_gain_is_not_promoted_and_the_champion_is_kept() -> None:
    champion = BASE + 0.05 + noise(0.02, 1)
    candidates = [model("champion", champion), model("c1", champion + 0.002 + noise(0.2, 4))]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert candidates[1].score("ndcg") > candidates[0].score("ndcg")  # better on average
    assert decision.gains[1]["vs_champion"].low < 0 < decision.gains[1]["vs_champion"].high
    assert decision.serving == 0 and not decision.promoted and decision.baseline is None
    assert decision.statuses == (CHAMPION, CHALLENGER)
    assert decision.reason.startswith("champion kept")


def test_a_challenger_that_beats_the_champion_but_not_the_best_baseline_is_not_promoted() -> None:
    champion = BASE + 0.005 + noise(0.5, 5)  # above the baseline on average, not clearly
    better = champion + 0.02  # clearly better than the champion, on every user
    candidates = [model("champion", champion), model("c1", better)]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.gains[1]["vs_champion"].low > 0
    assert decision.gains[1]["vs_baseline"].low < 0
    assert decision.serving == 0 and not decision.promoted
    assert decision.statuses == (CHAMPION, REJECTED)


def test_when_the_champion_loses_to_a_baseline_a_challenger_clearly_above_it_serves() -> None:
    champion = BASE - 0.001 + noise(0.5, 6)  # below the baseline's mean
    candidates = [
        model("champion", champion),
        model("c1", BASE + 0.001 + noise(0.5, 7)),  # above it on average, not clearly
        model("c2", BASE + 0.01),  # clearly above it, not clearly above the noisy champion
    ]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.gains[2]["vs_champion"].low < 0
    assert decision.serving == 2 and decision.promoted
    assert decision.statuses == (REJECTED, REJECTED, CHAMPION)
    assert decision.reason.startswith("champion lost to genre_popularity")


def test_when_no_model_clearly_beats_the_best_baseline_it_is_published() -> None:
    candidates = [
        model("champion", BASE - 0.02),
        model("c1", BASE + 0.002 + noise(0.3, 8)),  # above on average only
        scored("c2", BASE, AlsParams(factors=8), error="FloatingPointError: NaN"),
    ]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.serving is None and decision.baseline == "genre_popularity"
    assert not decision.promoted
    assert decision.statuses == (REJECTED, REJECTED, REJECTED)
    assert "publishing genre_popularity" in decision.reason
    assert set(decision.gains) == {0, 1}  # a failed candidate has no gains
    weak_genre = baselines(BASE + 0.03, BASE)  # the best baseline is whichever scores higher
    assert decide(candidates, weak_genre, "ndcg", BOOTSTRAP).baseline == "popularity"


def test_a_failed_champion_is_rejected_and_never_serves() -> None:
    candidates = [
        scored("champion", BASE, error="ValueError: NaN"),
        model("c1", BASE + 0.05 + noise(0.02, 9)),
    ]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.serving == 1 and decision.promoted
    assert decision.statuses == (REJECTED, CHAMPION)
    assert set(decision.gains[1]) == {"vs_baseline"}
    with pytest.raises(ValueError, match="no candidate"):
        decide([], BASELINES, "ndcg", BOOTSTRAP)


def _search(families: tuple[str, ...]) -> Search:
    return Search(
        families=families,
        als={"factors": (32, 64), "confidence": ("bm25", "log")},
        item_knn={"neighbours": (20, 100)},
        ease={"weighting": ("binary",)},
    )


def test_challengers_start_with_the_config_lastfm_and_other_families_defaults() -> None:
    champion = AlsParams(factors=64, regularization=0.05, alpha=1.0, confidence="bm25")
    proposed = AlsParams(factors=128, iterations=25)
    search = _search(("als", "item_knn", "ease"))
    day = date(2026, 11, 26)
    tried = challenger_params(champion, proposed, search, day)
    assert tried[0] == proposed
    # then last.fm ALS and the other families' defaults (cheapest first), rotated by the date:
    # on consecutive days each of them is tried first
    rotation = [LASTFM_ALS, ItemKnnParams(), EaseParams()]
    turn = rotation.index(tried[1])
    assert tried[1:4] == rotation[turn:] + rotation[:turn]
    firsts = {
        repr(challenger_params(champion, proposed, search, date(2026, 11, d))[1])
        for d in range(26, 29)
    }
    assert firsts == set(map(repr, rotation))
    # then the champion with one knob changed and the other families' grid, each once
    assert sorted(map(repr, tried[4:])) == sorted(
        map(
            repr,
            [
                champion.model_copy(update={"factors": 32}),
                champion.model_copy(update={"confidence": "log"}),
                ItemKnnParams(neighbours=20),
            ],
        )
    )
    assert champion not in tried and len(set(tried)) == len(tried)
    assert challenger_params(champion, proposed, search, day) == tried  # a rerun: same order
    orders = {
        tuple(map(repr, challenger_params(champion, proposed, search, date(2026, 12, d))[4:]))
        for d in range(1, 11)
    }
    assert len(orders) > 1 and all(sorted(o) == sorted(map(repr, tried[4:])) for o in orders)
    assert challenger_params(champion, champion, search, day)[:3] == tried[1:4]


def test_a_non_als_champion_is_challenged_by_als_and_its_own_neighbours() -> None:
    champion = ItemKnnParams(neighbours=100)
    tried = challenger_params(champion, champion, _search(("als", "item_knn")), date(2026, 1, 1))
    assert set(tried[:2]) == {LASTFM_ALS, AlsParams()}  # als defaults: another family
    assert ItemKnnParams(neighbours=20) in tried and champion not in tried
    assert not any(isinstance(p, EaseParams) for p in tried)  # ease is not searched
    knn_only = challenger_params(champion, champion, _search(("item_knn",)), date(2026, 1, 1))
    assert knn_only == [ItemKnnParams(neighbours=20)]  # no last.fm ALS without ALS


def test_the_search_holds_only_the_fits_that_can_serve() -> None:
    """ml.train keeps the champion's fit and the best challenger's (by mean) so far: never more
    than two, and the best by mean among the challengers is always one of them."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        means = rng.choice([0.12, 0.16, 0.2, 0.204, 0.25, -1.0], size=rng.integers(1, 6))
        candidates = [
            scored(f"c{i}", BASE, AlsParams(), error="failed")
            if m < 0
            else model(f"c{i}", np.full(N_USERS, m))
            for i, m in enumerate(means)
        ]
        found: SearchResult[str] = SearchResult(candidates[:1], {0: "fit-0"})
        for i in range(1, len(candidates)):
            found.candidates.append(candidates[i])
            keep_if_best(found, i, None if candidates[i].error else f"fit-{i}", "ndcg")
            assert len(found.fits) <= 2 and 0 in found.fits
        scores = [c.score("ndcg") for c in candidates[1:]]
        held = sorted(found.fits)
        if scores and max(scores) > float("-inf"):
            assert held == [0, 1 + int(np.argmax(scores))]  # ties: the earlier
        else:
            assert held == [0]
        decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
        if decision.serving is not None and decision.serving != 0:
            assert decision.serving in found.fits  # constant per user: the best mean wins


def test_search_tries_the_champion_then_challengers_within_the_limits() -> None:
    tried: list[tuple[str, Params]] = []

    def evaluate(params: Params, name: str, deadline: float | None) -> tuple[Scored, str]:
        tried.append((name, params))
        return scored(name, BASE + 0.01 * len(tried), params), name

    champion = AlsParams(factors=16)
    config = load_config(
        overrides=["selection.max_challengers=3", "search.families=['als', 'item_knn']"]
    )
    found = search(evaluate, champion, config, date(2026, 11, 26), 10)
    names = [name for name, _ in tried]
    assert names == ["champion", "challenger-1", "challenger-2", "challenger-3"]
    assert tried[0][1] == champion and tried[1][1] == config.model
    assert [c.name for c in found.candidates] == names
    assert sorted(found.fits) == [0, 3]  # the champion's and the best challenger's
    none_left = load_config(overrides=["selection.time_budget_s=0"])
    tried.clear()
    assert len(search(evaluate, champion, none_left, date(2026, 11, 26), 10).candidates) == 1


def test_the_budget_passes_over_a_family_known_to_cost_more_than_is_left() -> None:
    tried: list[Params] = []

    def evaluate(params: Params, name: str, deadline: float | None) -> tuple[Scored, str]:
        tried.append(params)
        return scored(name, BASE, params), name

    config = load_config(
        overrides=[
            "selection.max_challengers=4",
            "selection.time_budget_s=60",
            "search.families=['als', 'item_knn', 'bpr']",
        ]
    )
    past = {"bpr": 600.0, "item_knn": 1.0, "als": 5.0}  # the last recorded fits
    found = search(evaluate, AlsParams(), config, date(2026, 11, 26), 10, past)
    assert len(tried) == 5 and not any(p.family == "bpr" for p in tried)
    assert found.passed_over >= 1  # the bpr challengers, said in the step summary
    assert any(p.family == "item_knn" for p in tried)
    tried.clear()
    search(evaluate, AlsParams(), config, date(2026, 11, 26), 10)  # no history: the mean
    assert any(p.family == "bpr" for p in tried)


def test_challengers_get_the_end_of_the_budget_left_as_their_deadline(monkeypatch) -> None:
    clock = [1000.0]  # a fake time.monotonic(): each fit takes 20 s of it
    monkeypatch.setattr("ml.selection.time.monotonic", lambda: clock[0])
    deadlines: list[float | None] = []

    def evaluate(params: Params, name: str, deadline: float | None) -> tuple[Scored, str]:
        deadlines.append(deadline)
        clock[0] += 20.0
        return scored(name, BASE, params), name

    config = load_config(overrides=["selection.max_challengers=9", "selection.time_budget_s=50"])
    search(evaluate, AlsParams(), config, date(2026, 11, 26), 10, {"als": 20.0})
    # the champion is never stopped; the challengers share one end, 50 s after the first began
    assert deadlines == [None, 1070.0, 1070.0]


def test_model_run_rows_name_family_split_and_gains() -> None:
    config = load_config()
    knn = scored("challenger-1", BASE + 0.05 + noise(0.02, 10), ItemKnnParams())
    candidates = [model("champion", BASE + 0.01 + noise(0.3, 11)), knn]
    decision = decide(candidates, BASELINES, "ndcg", BOOTSTRAP)
    assert decision.serving == 1
    rows = model_run_rows(
        "run",
        datetime(2026, 11, 26, tzinfo=UTC),
        candidates=candidates,
        baselines=BASELINES,
        decision=decision,
        config=config,
        split=("time", "time split: ...", {"valid_interactions": 5}),
        sizes={"n_users": 3, "n_tracks": 4, "n_interactions": 5},
        test={"model": {"ndcg": {"mean": 0.1}}},
        artifact_path="/models/run-m01",
    )
    assert [(r.model_run_id, r.family, r.split, r.status) for r in rows] == [
        ("run-m00", "als", "time", REJECTED),
        ("run-m01", "item_knn", "time", CHAMPION),
    ]
    assert rows[1].params == ItemKnnParams().to_json() and rows[1].artifact_path
    assert rows[1].metrics["gains"]["vs_champion"] == vars(decision.gains[1]["vs_champion"])
    assert rows[1].metrics["test"] == {"model": {"ndcg": {"mean": 0.1}}}
    assert rows[1].metrics["split"] == {"reason": "time split: ...", "valid_interactions": 5}
    assert "test" not in rows[0].metrics and rows[0].artifact_path is None
    published = decide([model("champion", BASE - 0.05)], BASELINES, "ndcg", BOOTSTRAP)
    rows = model_run_rows(
        "run",
        datetime(2026, 11, 26, tzinfo=UTC),
        candidates=[model("champion", BASE - 0.05)],
        baselines=BASELINES,
        decision=published,
        config=config,
        split=("holdout", "per-user holdout: ...", {}),
        sizes={"n_users": 3, "n_tracks": 4, "n_interactions": 5},
    )
    assert [(r.model_run_id, r.family, r.split, r.status) for r in rows] == [
        ("run-m00", "als", "holdout", REJECTED),
        ("run-genre_popularity", "genre_popularity", "holdout", CHAMPION),
    ]
    assert rows[1].params == {"model": "genre_popularity"}

"""Which model serves, for both trainers (implicit's families, MLlib): the challengers, the
search in its time budget, the champion/challenger rule (`decide`, on paired bootstrap
intervals over the validation users) and the ml.model_runs rows."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from ml.config import MlConfig, Search
from ml.evaluate import Scored
from ml.intervals import Interval, differences
from ml.params import LASTFM_ALS, Params
from ml.registry import ModelRun

log = logging.getLogger(__name__)
Fit = TypeVar("Fit")  # a trainer's fitted model (ml.families.Recommender, ml.mllib.als.MllibFit)

CHAMPION, CHALLENGER, REJECTED = "champion", "challenger", "rejected"
# the families' defaults in order of their fit's cost at 100k users (EASE's grows with the
# cube of the tracks), so a short time budget sees the cheap ones first
CHEAPEST_FIRST = ("item_knn", "als", "lmf", "ease", "bpr")


def challenger_params(
    champion: Params, proposed: Params, search: Search, today: date
) -> list[Params]:
    """Who challenges the champion, in ml/README.md's order; the defaults are rotated by the
    date so that a short budget gets to each within a few days, the rest shuffled by the
    search seed and the date (a rerun the same day tries the same)."""
    spaces = {family: search.space(family) for family in search.families}
    rotated = [LASTFM_ALS] if "als" in search.families else []
    rotated += [
        search.params(family, {})
        for family in sorted(spaces, key=CHEAPEST_FIRST.index)
        if family != champion.family
    ]
    turn = today.toordinal() % max(len(rotated), 1)
    firsts = [proposed, *rotated[turn:], *rotated[:turn]]
    neighbours = [
        champion.model_copy(update={name: value})
        for name, values in spaces.get(champion.family, {}).items()
        for value in values
        if value != getattr(champion, name)
    ]
    others = [
        search.params(family, dict(zip(space, combination, strict=True)))
        for family, space in spaces.items()
        if family != champion.family
        for combination in itertools.product(*space.values())
    ]
    rest = neighbours + others
    rng = np.random.default_rng([search.seed, today.toordinal()])
    shuffled = [rest[i] for i in rng.permutation(len(rest))]
    return [p for p in dict.fromkeys(firsts + shuffled) if p != champion]


@dataclass
class SearchResult(Generic[Fit]):
    """The candidates scored (the champion's refit first) and the fits that can still serve:
    the champion's and the best challenger's so far, so at most two models are held."""

    candidates: list[Scored]
    fits: dict[int, Fit]
    passed_over: int = 0  # challengers left untried: the time budget was spent


def keep_if_best(found: SearchResult[Fit], i: int, fitted: Fit | None, metric: str) -> None:
    """Hold candidate i's fit if it is the champion's or the best challenger's so far (ties:
    the earlier), dropping the previous best challenger's."""
    if fitted is None:
        return
    held = [j for j in found.fits if j != 0]
    if held and found.candidates[held[0]].score(metric) >= found.candidates[i].score(metric):
        return
    for j in held:
        del found.fits[j]
    found.fits[i] = fitted


def search(
    evaluate: Callable[[Params, str, float | None], tuple[Scored, Fit | None]],
    champion: Params,
    config: MlConfig,
    today: date,
    k: int,
    past_seconds: Mapping[str, float] | None = None,
    step_budget: float | None = None,
) -> SearchResult[Fit]:
    """The champion's parameters refit, then the challengers that fit in the time budget
    (ml/README.md "Selection"; expected: `past_seconds`, else the mean candidate's so far).
    `evaluate(params, name, deadline)` stops a fit at `deadline` (None for the champion).
    `step_budget`: what the train step's own budget leaves them, when it is the shorter."""
    found: SearchResult[Fit] = SearchResult([], {})
    proposals = [champion, *challenger_params(champion, config.model, config.search, today)]
    budget, spent, passed = config.selection.time_budget_s, [], 0
    if step_budget is not None:
        budget = min(budget, step_budget)
    for params in proposals:
        i = len(found.candidates)
        if i > config.selection.max_challengers:
            break
        expected = (past_seconds or {}).get(params.family, float(np.mean(spent or [0.0])))
        if i and (budget <= 0 or sum(spent[1:]) + expected > budget):
            passed += 1
            continue
        started = time.monotonic()
        deadline = started + budget - sum(spent[1:]) if i else None
        scored, fitted = evaluate(params, f"challenger-{i}" if i else "champion", deadline)
        spent.append(time.monotonic() - started)
        metrics = ", ".join(f"{name}@{k} {value:.4f}" for name, value in scored.metrics.items())
        rerank = f" (favorite genre first in its top {scored.depth})" if scored.depth else ""
        log.info("%s %s%s: %s", scored.name, params.label(), rerank, metrics or scored.error)
        found.candidates.append(scored)
        keep_if_best(found, i, fitted, config.selection.metric)
    if passed:
        log.info("time budget %.0fs: %d challenger(s) passed over", budget, passed)
    found.passed_over = passed
    return found


def decide_search(
    found: SearchResult[Fit], baselines: dict[str, Scored], config: MlConfig
) -> tuple[Decision, Fit | None]:
    """The decision and the serving candidate's training-split fit, if still held (None: a
    baseline serves, or the serving fit is to be made anew); other fits go."""
    decision = decide(
        found.candidates, baselines, config.selection.metric, config.evaluation.bootstrap()
    )
    log.info("decision: %s", decision.reason)
    fitted = None if decision.serving is None else found.fits.get(decision.serving)
    found.fits.clear()
    return decision, fitted


@dataclass(frozen=True)
class Decision:
    serving: int | None  # index into the candidates of the model that serves, or None
    baseline: str | None  # when serving is None: the baseline that is published
    promoted: bool  # a challenger replaced the champion
    statuses: tuple[str, ...]  # per candidate
    reason: str
    gains: dict[int, dict[str, Interval]] = field(default_factory=dict)  # per candidate


def decide(
    candidates: Sequence[Scored],
    baselines: dict[str, Scored],
    metric: str,
    bootstrap: dict[str, Any] | None = None,
) -> Decision:
    """ml/README.md's champion/challenger rule on paired bootstrap intervals: candidates[0] is
    the champion's refit, the rest challengers, all scored per user on the same users."""
    if not candidates:
        raise ValueError("no candidate to decide on")
    best_baseline = max(baselines, key=lambda name: baselines[name].score(metric))
    bar = baselines[best_baseline]
    scores = [c.score(metric) for c in candidates]

    pairs: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for i, scored in enumerate(candidates):
        if scored.error is None:
            pairs[i, "vs_baseline"] = (scored.per_user[metric], bar.per_user[metric])
            if i and candidates[0].error is None:
                pairs[i, "vs_champion"] = (scored.per_user[metric], candidates[0].per_user[metric])
    gains: dict[int, dict[str, Interval]] = {}
    for (i, versus), found in differences(pairs, **(bootstrap or {})).items():  # one bootstrap
        gains.setdefault(i, {})[versus] = found
    valid = [i for i in gains if gains[i]["vs_baseline"].low > 0]
    statuses = [CHALLENGER if i in valid else REJECTED for i in range(len(candidates))]
    champion_ok = candidates[0].error is None
    promotable = [i for i in valid if i and (not champion_ok or gains[i]["vs_champion"].low > 0)]

    def best(indexes: list[int]) -> int:
        return max(indexes, key=lambda i: (scores[i], -i))

    def named(i: int) -> str:
        return f"{candidates[i].name} ({candidates[i].family}) {metric} {scores[i]:.4f}"

    if champion_ok and promotable:
        serving = best(promotable)
        reason = (
            f"challenger {named(serving)} promoted: gain over the champion "
            f"{gains[serving]['vs_champion']}, over {best_baseline} {gains[serving]['vs_baseline']}"
        )
    elif champion_ok and scores[0] > bar.score(metric):
        serving = 0
        reason = (
            f"champion kept: {named(0)} vs {best_baseline} {bar.score(metric):.4f}; no "
            "challenger's gain over it excludes zero"
        )
    elif valid:
        serving = best(valid)
        reason = (
            f"champion lost to {best_baseline} ({scores[0]:.4f} <= {bar.score(metric):.4f}); "
            f"{named(serving)} beats it by {gains[serving]['vs_baseline']}"
        )
    else:
        reason = (
            f"no model beats baseline {best_baseline} ({bar.score(metric):.4f}) with an interval "
            f"above zero: best model {metric} {max(scores):.4f}; publishing {best_baseline}"
        )
        statuses = [REJECTED] * len(candidates)
        return Decision(None, best_baseline, False, tuple(statuses), reason, gains)
    statuses[serving] = CHAMPION
    return Decision(serving, None, serving != 0, tuple(statuses), reason, gains)


def model_run_id(run_id: str, candidate: int) -> str:
    """The ml.model_runs id of a run's candidate (0: the champion's refit)."""
    return f"{run_id}-m{candidate:02d}"


def model_run_rows(
    run_id: str,
    trained_at: datetime,
    *,
    candidates: Sequence[Scored],
    baselines: dict[str, Scored],
    decision: Decision,
    config: MlConfig,
    split: tuple[str, str, dict[str, int]],
    sizes: dict[str, int],
    test: dict[str, Any] | None = None,
    refit_of: str | None = None,
    serving_fit_seconds: float | None = None,
    artifact_path: str | None = None,
    extra: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
) -> list[ModelRun]:
    """The ml.model_runs rows of one run: one per candidate (`<run_id>-mNN`), and a champion
    row for a published baseline. `split` is (kind, reason, sizes); `extra` joins every row's
    metrics (e.g. the trainer's name); `step` (the step's phase timings, its time budget and
    what it skipped) the serving row's."""
    kind, reason, split_sizes = split
    common: dict[str, Any] = {
        "k": config.evaluation.k,
        "selection_metric": config.selection.metric,
        "split": {"reason": reason, **split_sizes},
        "decision": decision.reason,
        **(extra or {}),
    }
    row = partial(
        ModelRun,
        run_id=run_id,
        trained_at=trained_at,
        baseline_metrics={name: scored.metrics for name, scored in baselines.items()},
        split=kind,
        **sizes,
    )
    rows: list[ModelRun] = []
    for i, (scored, status) in enumerate(zip(candidates, decision.statuses, strict=True)):
        assert scored.params is not None
        serving = decision.serving == i
        metrics: dict[str, Any] = {**scored.metrics, **common, "fit_seconds": scored.fit_seconds}
        metrics["favorite_genre_depth"] = scored.depth
        metrics["role"] = "challenger" if i else "champion_refit"
        metrics["gains"] = {name: vars(gain) for name, gain in decision.gains.get(i, {}).items()}
        if i == 0 and refit_of is not None:
            metrics["refit_of"] = refit_of
        if scored.error:
            metrics["error"] = scored.error
        if serving:
            metrics["test"] = test or {}
            if step is not None:
                metrics["step"] = step
            if serving_fit_seconds is not None:
                metrics["serving_fit_seconds"] = round(serving_fit_seconds, 3)
        rows.append(
            row(
                model_run_id(run_id, i),
                family=scored.params.family,
                params=scored.params.to_json(),
                metrics=metrics,
                status=status,
                artifact_path=artifact_path if serving else None,
            )
        )
    if decision.baseline is not None:
        name = decision.baseline
        metrics = {**baselines[name].metrics, **common, "role": "baseline", "test": test or {}}
        if step is not None:
            metrics["step"] = step
        rows.append(
            row(
                f"{run_id}-{name}",
                family=name,
                params={"model": name},
                metrics=metrics,
                status=CHAMPION,
            )
        )
    return rows

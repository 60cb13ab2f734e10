"""Which model serves, for both trainers (implicit, MLlib): the challengers, the search in its
time budget, the champion/challenger rule (`decide`) and the ml.model_runs rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from ml.config import MlConfig, ModelParams, Search
from ml.evaluate import NEXT_HIT, Scored
from ml.registry import ModelRun

log = logging.getLogger(__name__)
Fit = TypeVar("Fit")  # a trainer's fitted model (ml.model.FittedModel, ml.mllib.als.MllibFit)

CHAMPION, CHALLENGER, REJECTED = "champion", "challenger", "rejected"


def challenger_params(
    champion: ModelParams, proposed: ModelParams, search: Search, today: date
) -> list[ModelParams]:
    """The config's parameters if not the champion's, then the champion with one parameter
    changed, shuffled by the search seed and the date (a rerun the same day tries the same)."""
    neighbours = [
        champion.model_copy(update={name: value})
        for name, values in search.space().items()
        for value in values
        if value != getattr(champion, name)
    ]
    rng = np.random.default_rng([search.seed, today.toordinal()])
    shuffled = [neighbours[i] for i in rng.permutation(len(neighbours))]
    return list(dict.fromkeys(([proposed] if proposed != champion else []) + shuffled))


@dataclass
class SearchResult(Generic[Fit]):
    """The candidates scored (the champion's refit first) and the fits that can still serve:
    the champion's and the best challenger's so far, so at most two models are held."""

    candidates: list[Scored]
    fits: dict[int, Fit]


def keep_if_best(found: SearchResult[Fit], i: int, fitted: Fit | None, metric: str) -> None:
    """Hold candidate i's fit if it is the champion's or the best challenger's so far (ties:
    the earlier, as `decide`), dropping the previous best challenger's."""
    if fitted is None:
        return
    held = [j for j in found.fits if j != 0]
    if held and found.candidates[held[0]].score(metric) >= found.candidates[i].score(metric):
        return
    for j in held:
        del found.fits[j]
    found.fits[i] = fitted


def search(
    evaluate: Callable[[ModelParams, str], tuple[Scored, Fit | None]],
    champion: ModelParams,
    config: MlConfig,
    today: date,
    k: int,
) -> SearchResult[Fit]:
    """The champion's parameters refit, then challengers until `max_challengers` or the time
    budget (a challenger is started only if the mean candidate's time still fits)."""
    found: SearchResult[Fit] = SearchResult([], {})
    proposals = challenger_params(champion, config.model, config.search, today)
    proposals = [champion, *proposals[: config.selection.max_challengers]]
    budget, spent = config.selection.time_budget_s, []
    for i, params in enumerate(proposals):
        if i and sum(spent[1:]) + float(np.mean(spent)) > budget:
            log.info("time budget %.0fs: %d challenger(s) not tried", budget, len(proposals) - i)
            break
        started = time.perf_counter()
        scored, fitted = evaluate(params, f"challenger-{i}" if i else "champion")
        spent.append(time.perf_counter() - started)
        metrics = ", ".join(f"{name}@{k} {value:.4f}" for name, value in scored.metrics.items())
        log.info("%s %s: %s", scored.name, params.label(), metrics or f"failed ({scored.error})")
        found.candidates.append(scored)
        keep_if_best(found, i, fitted, config.selection.metric)
    return found


def decide_search(
    found: SearchResult[Fit],
    baselines: dict[str, Scored],
    config: MlConfig,
    next_metrics: Callable[[Fit], dict[str, float]],
) -> tuple[Decision, Fit | None]:
    """The decision and the serving candidate's training-split fit (None: a baseline serves);
    the champion's refit and a promoted challenger get their `next_metrics`, other fits go."""
    candidates = found.candidates
    decision = decide(
        candidates, baselines, config.selection.metric, config.selection.min_improvement
    )
    log.info("decision: %s", decision.reason)
    if 0 in found.fits:
        candidates[0].metrics.update(next_metrics(found.fits[0]))
    fitted = None if decision.serving is None else found.fits.get(decision.serving)
    found.fits.clear()
    if fitted is not None and NEXT_HIT not in candidates[decision.serving or 0].metrics:
        candidates[decision.serving or 0].metrics.update(next_metrics(fitted))
    return decision, fitted


@dataclass(frozen=True)
class Decision:
    serving: int | None  # index into the candidates of the ALS model that serves, or None
    baseline: str | None  # when serving is None: the baseline that is published
    promoted: bool  # a challenger replaced the champion
    statuses: tuple[str, ...]  # per candidate
    reason: str


def decide(
    candidates: Sequence[Scored],
    baselines: dict[str, Scored],
    metric: str,
    min_improvement: float,
) -> Decision:
    """candidates[0] is the champion's refit, the rest are challengers. A challenger is promoted
    only if it beats the champion by `min_improvement` (relative) and both baselines; else the
    champion serves if it beats both baselines; else the best challenger that does; else the
    better baseline is published. 'challenger': beat both baselines but not chosen."""
    if not candidates:
        raise ValueError("no candidate to decide on")
    best_baseline = max(baselines, key=lambda name: baselines[name].score(metric))
    bar = baselines[best_baseline].score(metric)
    scores = [c.score(metric) for c in candidates]
    champion = scores[0]
    valid = [i for i, score in enumerate(scores) if score > bar]
    statuses = [CHALLENGER if i in valid else REJECTED for i in range(len(candidates))]
    margin_bar = champion * (1 + min_improvement) if champion > 0 else champion
    promotable = [i for i in valid if i > 0 and scores[i] >= margin_bar and scores[i] > champion]

    def best(indexes: list[int]) -> int:
        return max(indexes, key=lambda i: (scores[i], -i))

    if promotable:
        serving = best(promotable)
        reason = (
            f"challenger {candidates[serving].name} promoted: {metric} {scores[serving]:.4f} "
            f"vs champion {champion:.4f} (needs +{min_improvement:.0%}) and vs best baseline "
            f"{bar:.4f}"
        )
    elif 0 in valid:
        serving = 0
        reason = (
            f"champion kept: {metric} {champion:.4f} beats best baseline {bar:.4f}; "
            "no challenger beat it by the margin"
        )
    elif valid:
        serving = best(valid)
        reason = (
            f"champion lost to baseline {best_baseline} ({champion:.4f} <= {bar:.4f}); "
            f"challenger {candidates[serving].name} beats it ({scores[serving]:.4f})"
        )
    else:
        reason = (
            f"no ALS model beats baseline {best_baseline}: best ALS {metric} {max(scores):.4f} "
            f"<= {bar:.4f}; publishing {best_baseline}"
        )
        return Decision(None, best_baseline, False, (REJECTED,) * len(candidates), reason)
    statuses[serving] = CHAMPION
    return Decision(serving, None, serving != 0, tuple(statuses), reason)


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
    k: int,
    holdout_sizes: dict[str, int],
    sizes: dict[str, int],
    refit_of: str | None = None,
    serving_fit_seconds: float | None = None,
    artifact_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[ModelRun]:
    """The ml.model_runs rows of one run: one per candidate (`<run_id>-mNN`, status from the
    decision; the serving one with its fit time and artifact), and a champion row for a
    published baseline. `extra` joins every row's metrics (e.g. the trainer's name)."""
    common: dict[str, Any] = {
        "k": k,
        "selection_metric": config.selection.metric,
        "holdout": {**holdout_sizes, "per_user": config.evaluation.holdout_per_user},
        "decision": decision.reason,
        **(extra or {}),
    }
    row = partial(
        ModelRun,
        run_id=run_id,
        trained_at=trained_at,
        baseline_metrics={name: scored.metrics for name, scored in baselines.items()},
        **sizes,
    )
    rows: list[ModelRun] = []
    for i, (scored, status) in enumerate(zip(candidates, decision.statuses, strict=True)):
        assert scored.params is not None
        serving = decision.serving == i
        metrics: dict[str, Any] = {**scored.metrics, **common, "fit_seconds": scored.fit_seconds}
        metrics["role"] = "challenger" if i else "champion_refit"
        if i == 0 and refit_of is not None:
            metrics["refit_of"] = refit_of
        if scored.error:
            metrics["error"] = scored.error
        if serving and serving_fit_seconds is not None:
            metrics["serving_fit_seconds"] = round(serving_fit_seconds, 3)
        rows.append(
            row(
                model_run_id(run_id, i),
                params=scored.params.to_json(),
                metrics=metrics,
                status=status,
                artifact_path=artifact_path if serving else None,
            )
        )
    if decision.baseline is not None:
        name = decision.baseline
        metrics = {**baselines[name].metrics, **common, "role": "baseline"}
        rows.append(
            row(f"{run_id}-{name}", params={"model": name}, metrics=metrics, status=CHAMPION)
        )
    return rows

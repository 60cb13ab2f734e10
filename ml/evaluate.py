"""Offline evaluation on ml.split's folds: candidates judged on validation, the chosen one's
test report (intervals, segments, beyond accuracy). Definitions: ml/README.md."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ml import families
from ml.baselines import GENRE_POPULARITY, POPULARITY, Popularity
from ml.config import Evaluation
from ml.families import FamilySkipped, OverBudget, Params, Recommender
from ml.intervals import Interval, difference
from ml.quality import (
    ACCURACY,
    ALL,
    beyond_accuracy,
    catalog_coverage,
    per_user_ranking_metrics,
    segment_intervals,
    segments,
)
from ml.rerank import reranked
from ml.split import Fold, Split

log = logging.getLogger(__name__)
METRIC_NAMES = (*ACCURACY, "coverage")
NEXT_HIT = "next_hit"  # the Spark engine's co-listening measure of its similar lists


@dataclass
class Scored:
    """One candidate's result on a fold: the means, and the per-user values behind them."""

    name: str
    metrics: dict[str, float]
    params: Params | None = None  # None for a baseline
    fit_seconds: float = 0.0
    error: str | None = None
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    depth: int = 0  # the favorite-genre re-rank validation chose (ml.rerank); 0: none

    @property
    def family(self) -> str:
        return self.name if self.params is None else self.params.family

    def score(self, metric: str) -> float:
        return float("-inf") if self.error else self.metrics[metric]


@dataclass(frozen=True)
class EvaluationData:
    """What every candidate is judged on: the split and the users' favorite genres."""

    split: Split
    favorite_genre: np.ndarray  # genre code of each matrix row (-1 = none)
    track_genres: sp.csr_matrix
    n_catalog_tracks: int
    settings: Evaluation
    metric: str = "ndcg"  # the selection's: which re-rank depth a candidate keeps

    @property
    def k(self) -> int:
        return self.settings.k

    def depths(self) -> list[int]:
        """The favorite-genre re-rank depths validation tries: 0 (none) and those above k."""
        return sorted({0, *(d for d in self.settings.favorite_genre_depths if d > self.k)})

    def lists(self, fitted: Recommender, fold: Fold, depths: list[int]) -> list[np.ndarray]:
        """The model's top-k for the fold's users re-ranked to each of `depths` (ml.rerank),
        all from one ranking as deep as the deepest."""
        rows = fold.eval_rows
        ids, _ = fitted.recommend(rows, fold.train, max(self.k, *depths))
        favorite = self.favorite_genre[rows]
        return [reranked(ids, favorite, self.track_genres, self.k, d) for d in depths]

    def gain(self, a: Scored, b: Scored, metric: str) -> Interval:
        """The paired interval of a's gain over b on the same users."""
        return difference(a.per_user[metric], b.per_user[metric], **self.settings.bootstrap())


def judge(ids: np.ndarray, fold: Fold, k: int, n_catalog_tracks: int) -> tuple[dict, dict]:
    """Means and per-user values of the lists `ids` (rows: fold.eval_rows) on `fold`."""
    per_user = per_user_ranking_metrics(ids, fold.test[fold.eval_rows], k)
    means = {name: float(values.mean()) for name, values in per_user.items()}
    return {**means, "coverage": catalog_coverage(ids, n_catalog_tracks)}, per_user


def baseline_lists(data: EvaluationData, fold: Fold) -> dict[str, np.ndarray]:
    """Both baselines' top-k for the fold's users, popularity counted on its training part."""
    popularity = Popularity(fold.train, data.track_genres)
    rows, heard = fold.eval_rows, fold.train[fold.eval_rows]
    genres = {POPULARITY: None, GENRE_POPULARITY: data.favorite_genre[rows]}
    return {
        name: popularity.recommend(data.k, heard=heard, favorite_genre=genre).ids
        for name, genre in genres.items()
    }


def evaluate_baselines(data: EvaluationData) -> dict[str, Scored]:
    fold = data.split.validation()
    results = {}
    for name, ids in baseline_lists(data, fold).items():
        metrics, per_user = judge(ids, fold, data.k, data.n_catalog_tracks)
        results[name] = Scored(name, metrics, per_user=per_user)
    return results


def evaluate_model(
    data: EvaluationData,
    params: Params,
    name: str,
    num_threads: int = 0,
    deadline: float | None = None,
) -> tuple[Scored, Recommender | None]:
    """Fit on the training split (stopped at `deadline`, families.fit) and score on
    validation; a failing, skipped or stopped fit is a result with `error`, not a raise."""
    fold = data.split.validation()
    try:
        fitted = families.fit(fold.train, params, num_threads, deadline=deadline)
        depths = data.depths()
        judged = [
            judge(ids, fold, data.k, data.n_catalog_tracks)
            for ids in data.lists(fitted, fold, depths)
        ]
        best = max(range(len(depths)), key=lambda i: (judged[i][0][data.metric], -i))
        metrics, per_user = judged[best]
    except FamilySkipped as exc:
        log.info("candidate %s (%s) skipped: %s", name, params.label(), exc)
        expected = exc.expected_seconds if isinstance(exc, OverBudget) else 0.0
        return Scored(name, {}, params, expected, error=f"skipped: {exc}"), None
    except (ValueError, FloatingPointError, MemoryError) as exc:
        log.warning("candidate %s (%s) failed: %s", name, params.label(), exc)
        return Scored(name, {}, params, error=f"{type(exc).__name__}: {exc}"), None
    depth = depths[best]
    return Scored(name, metrics, params, fitted.fit_seconds, per_user=per_user, depth=depth), fitted


def report_on_test(
    data: EvaluationData,
    lists: dict[str, np.ndarray],
    metric: str,
    champion: str,
) -> dict[str, dict[str, Any]]:
    """The reported figures of top-k `lists` (name -> ids for the test users) on the test
    fold: every accuracy metric's mean with its interval, overall and per segment of training
    history; beyond accuracy; and the paired gain of `champion` over each other list."""
    fold = data.split.testing()
    labels = segments(np.diff(fold.train[fold.eval_rows].indptr))
    per_user = {
        name: judge(ids, fold, data.k, data.n_catalog_tracks)[1] for name, ids in lists.items()
    }
    columns: dict[tuple[str, str, str], np.ndarray] = {
        ("metric", name, m): values
        for name, found in per_user.items()
        for m, values in found.items()
    }
    for name in lists:  # the paired gains, on the same resamples as the rest
        if name != champion:
            columns["gain", name, metric] = per_user[champion][metric] - per_user[name][metric]
    # every list and gain at once: one bootstrap per segment (the same draws as one by one)
    by_segment = segment_intervals(columns, labels, **data.settings.bootstrap())
    report: dict[str, dict[str, Any]] = {}
    for name, ids in lists.items():
        overall = by_segment[ALL]
        report[name] = {
            "users": len(fold.eval_rows),
            **{m: _interval_json(overall["metric", name, m]) for m in per_user[name]},
            "segments": {
                segment: {
                    "users": int(np.sum(labels == segment)),
                    metric: _interval_json(found["metric", name, metric]),
                }
                for segment, found in by_segment.items()
                if segment != ALL
            },
            **beyond_accuracy(ids, fold.train, data.track_genres, data.n_catalog_tracks),
        }
    for name in lists:
        if name != champion:
            report[champion][f"gain_vs_{name}"] = _interval_json(
                by_segment[ALL]["gain", name, metric]
            )
    return report


def _interval_json(interval: Interval) -> dict[str, float]:
    return {name: round(value, 6) for name, value in vars(interval).items()}


def lists_for_test(
    data: EvaluationData,
    serving: tuple[str, Params, Recommender | None] | None,
    num_threads: int = 0,
    depth: int = 0,
) -> tuple[dict[str, np.ndarray], Recommender | None]:
    """The test users' lists of both baselines and of the serving model (`name, params`,
    refit on train + validation, continuing its validation fit where the family can; re-ranked
    to the `depth` validation chose)."""
    fold = data.split.testing()
    lists = baseline_lists(data, fold)
    if serving is None:
        return lists, None
    name, params, start = serving
    fitted = families.fit(fold.train, params, num_threads, start=start)
    (lists[name],) = data.lists(fitted, fold, [depth])
    return lists, fitted


def format_table(
    results: Sequence[Scored],
    k: int,
    metric: str | None = None,
    gains: Mapping[str, Interval] | None = None,
    versus: str = "",
) -> str:
    """A plain-text comparison table, one row per candidate, and what the metrics mean; with
    `gains` (candidate name -> the paired interval of its `metric` gain over `versus`), a
    column of them. A failed candidate's row says why in its params column."""
    gains = gains or {}
    gain_column = [f"{metric}@{k} gain vs {versus}"] if gains else []
    names = (f"{m}@{k}" if m != "coverage" else m for m in METRIC_NAMES)
    rows = [["candidate", *names, *gain_column, "fit s"]]
    for r in results:
        cells = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in METRIC_NAMES]
        gain = [str(gains[r.name]) if r.name in gains else "-"] if gains else []
        fit_s = "-" if r.params is None or r.error else f"{r.fit_seconds:.1f}"
        rows.append([r.name, *cells, *gain, fit_s])
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    rows.insert(1, ["-" * w for w in widths])

    def label(r: Scored) -> str:
        text = "-" if r.params is None else r.params.label()
        return f"{text}: {r.error}" if r.error else text

    params = ["params", "", *map(label, results)]

    def render(row: list[str], last: str) -> str:
        middle = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([row[0].ljust(widths[0]), *middle, last]).rstrip()

    note = (
        "precision = hits/k; recall = hits/held-out tracks of the user; map, ndcg as implicit's; "
        "coverage = distinct recommended tracks / catalog"
    )
    if gains:
        note += "; gain = mean [interval] of the paired per-user difference"
    if metric:
        note += f"; selection by {metric}@{k}"
    return "\n".join([*map(render, rows, params), note])

"""Offline evaluation: a per-user leave-k-out holdout (not implicit's leave_k_out_split: in 0.7.3
it can multiply held-out values), ranking metrics at k, the "play next" lists' `next_hit`, and
the popularity baselines on the same split (definitions: ml/README.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ml.baselines import GENRE_POPULARITY, POPULARITY, Popularity
from ml.config import Evaluation, ModelParams
from ml.model import FittedModel, fit, recommend, similar
from ml.topk import in_rows

log = logging.getLogger(__name__)
METRIC_NAMES = ("precision", "recall", "map", "ndcg", "coverage")
NEXT_HIT = "next_hit"


class NotEnoughData(RuntimeError):
    """Too few users to evaluate on; the message is one line."""


@dataclass(frozen=True)
class Holdout:
    train: sp.csr_matrix  # listen counts with the held-out pairs removed
    test: sp.csr_matrix  # the held-out pairs only (same shape)
    eval_rows: np.ndarray  # the users evaluated, sorted
    n_eligible: int

    def sizes(self) -> dict[str, int]:
        return {
            "eval_users": len(self.eval_rows),
            "eligible_users": self.n_eligible,
            "train_interactions": int(self.train.nnz),
            "test_interactions": int(self.test.nnz),
        }


def leave_k_out(counts: sp.csr_matrix, settings: Evaluation) -> Holdout:
    """The holdout split of `counts` (users x tracks); same data and seed, same split."""
    rng = np.random.default_rng(settings.seed)
    n_users = counts.shape[0]
    per_user = np.diff(counts.indptr)
    eligible = np.flatnonzero(per_user >= settings.min_user_tracks)
    if len(eligible) < settings.min_eval_users:
        raise NotEnoughData(
            f"only {len(eligible)} users have >= {settings.min_user_tracks} distinct tracks; "
            f"evaluation needs at least {settings.min_eval_users}"
        )
    chosen = eligible
    if len(eligible) > settings.max_eval_users:
        chosen = np.sort(rng.choice(eligible, settings.max_eval_users, replace=False))
    evaluated = np.zeros(n_users, dtype=bool)
    evaluated[chosen] = True

    owner = np.repeat(np.arange(n_users), per_user)
    order = np.lexsort((rng.random(counts.nnz), owner))  # random order within each user
    position = np.empty(counts.nnz, dtype=np.int64)
    position[order] = np.arange(counts.nnz) - counts.indptr[owner[order]]
    held_out = evaluated[owner] & (position < settings.holdout_per_user)

    train, test = counts.copy(), counts.copy()
    train.data[held_out] = 0
    test.data[~held_out] = 0
    train.eliminate_zeros()
    test.eliminate_zeros()
    return Holdout(train, test, chosen, len(eligible))


def ranking_metrics(
    ids: np.ndarray, test: sp.csr_matrix, k: int, n_catalog_tracks: int
) -> dict[str, float]:
    """Metrics at k of top-k lists `ids` (rows aligned with `test`'s rows; -1 = empty slot).
    Any lists, baselines' too: implicit's ranking_metrics_at_k needs a model and has neither
    the textbook precision nor coverage (tests/ml/test_evaluate.py checks the rest against it)."""
    m = ids.shape[0]
    relevant = np.diff(test.indptr)
    if m == 0 or np.any(relevant == 0):
        raise ValueError("every evaluated user needs at least one held-out track")
    hits = in_rows(test, np.arange(m), ids)

    slots = ids.shape[1]
    n_hits = hits.sum(axis=1)
    ideal = np.minimum(k, relevant)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, slots + 1)
    average_precision = (precision_at_rank * hits).sum(axis=1) / ideal
    discount = 1.0 / np.log2(np.arange(2, max(k, slots) + 2))
    dcg = (hits * discount[:slots]).sum(axis=1)
    idcg = np.cumsum(discount)[ideal - 1]
    covered = np.unique(ids[ids >= 0])
    return {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / relevant)),
        "map": float(np.mean(average_precision)),
        "ndcg": float(np.mean(dcg / idcg)),
        "coverage": float(len(covered) / max(n_catalog_tracks, 1)),
    }


@dataclass
class Scored:
    """One candidate's result on the holdout."""

    name: str
    metrics: dict[str, float]
    params: ModelParams | None = None  # None for a baseline
    fit_seconds: float = 0.0
    error: str | None = None

    def score(self, metric: str) -> float:
        return float("-inf") if self.error else self.metrics[metric]


@dataclass(frozen=True)
class EvaluationData:
    """What every candidate is judged on: the split and the users' favorite genres."""

    holdout: Holdout
    favorite_genre: np.ndarray  # genre code of each matrix row (-1 = none)
    track_genres: sp.csr_matrix
    n_catalog_tracks: int
    k: int

    @property
    def test_rows(self) -> sp.csr_matrix:
        return self.holdout.test[self.holdout.eval_rows]


def next_track_hit_rate(similar_ids: np.ndarray, holdout: Holdout, k: int) -> float:
    """`next_hit`@k of the similar lists `similar_ids` (tracks x >= k columns, -1 = empty
    slot): per evaluated user, the share of their training tracks whose list holds one of
    their held-out tracks, averaged over users."""
    rows = holdout.eval_rows
    train, test = holdout.train[rows], holdout.test[rows]
    seeds_per_user = np.diff(train.indptr)
    if len(rows) == 0 or np.any(seeds_per_user == 0):
        raise ValueError("every evaluated user needs at least one training track")
    owner = np.repeat(np.arange(len(rows)), seeds_per_user)
    hit = in_rows(test, owner, similar_ids[train.indices, :k]).any(axis=1)
    per_user = np.bincount(owner, weights=hit, minlength=len(rows)) / seeds_per_user
    return float(per_user.mean())


def model_next_hit(data: EvaluationData, fitted: FittedModel, scoring: str = "dot") -> float:
    """`next_hit`@k of the similar lists, as published, of a model fit on the training split."""
    ids, _ = similar(fitted.als, data.k, scoring)
    return next_track_hit_rate(ids, data.holdout, data.k)


def baseline_next_hits(data: EvaluationData) -> dict[str, float]:
    """`next_hit`@k of both baselines' similar lists (popularity of the training split) by name."""
    train, k = data.holdout.train, data.k
    popularity = Popularity(train, data.track_genres)
    itself = sp.identity(train.shape[1], dtype=np.float32, format="csr")
    lists = {
        POPULARITY: popularity.recommend(k, heard=itself).ids,
        GENRE_POPULARITY: popularity.similar_by_genre(k).ids,
    }
    return {name: next_track_hit_rate(ids, data.holdout, k) for name, ids in lists.items()}


def next_track_metrics(
    data: EvaluationData, fitted: FittedModel | None, scoring: str = "dot"
) -> dict[str, float]:
    """`next_hit`@k of the model's similar lists by `scoring` (left out when `fitted` is None)
    and of both baselines': {"next_hit", "next_hit_popularity", "next_hit_genre_popularity"}."""
    out = {f"{NEXT_HIT}_{name}": value for name, value in baseline_next_hits(data).items()}
    if fitted is not None:
        out = {NEXT_HIT: model_next_hit(data, fitted, scoring), **out}
    return out


def evaluate_baselines(data: EvaluationData) -> dict[str, Scored]:
    train, rows = data.holdout.train, data.holdout.eval_rows
    popularity = Popularity(train, data.track_genres)
    results: dict[str, Scored] = {}
    for name, genres in {POPULARITY: None, GENRE_POPULARITY: data.favorite_genre[rows]}.items():
        recs = popularity.recommend(data.k, heard=train[rows], favorite_genre=genres)
        metrics = ranking_metrics(recs.ids, data.test_rows, data.k, data.n_catalog_tracks)
        results[name] = Scored(name, metrics)
    return results


def evaluate_model(
    data: EvaluationData, params: ModelParams, name: str, num_threads: int = 0
) -> tuple[Scored, FittedModel | None]:
    """Fit on the training split and score; a failing fit is a result with `error`, not a raise."""
    try:
        fitted = fit(data.holdout.train, params, num_threads)
        ids, _ = recommend(fitted.als, data.holdout.eval_rows, data.holdout.train, data.k)
        metrics = ranking_metrics(ids, data.test_rows, data.k, data.n_catalog_tracks)
    except (ValueError, FloatingPointError, MemoryError) as exc:
        log.warning("candidate %s (%s) failed: %s", name, params.label(), exc)
        return Scored(name, {}, params, error=f"{type(exc).__name__}: {exc}"), None
    return Scored(name, metrics, params, fitted.fit_seconds), fitted


def format_table(results: Sequence[Scored], k: int, metric: str | None = None) -> str:
    """A plain-text comparison table, one row per candidate, and what the metrics mean."""
    names = (*METRIC_NAMES, NEXT_HIT)
    rows = [["candidate", *(f"{m}@{k}" if m != "coverage" else m for m in names), "fit s"]]
    for r in results:
        cells = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in names]
        fit_s = "-" if r.params is None else f"{r.fit_seconds:.1f}"
        rows.append([r.name, *(["failed"] * len(names) if r.error else cells), fit_s])
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    rows.insert(1, ["-" * w for w in widths])
    params = ["params", "", *("-" if r.params is None else r.params.label() for r in results)]

    def render(row: list[str], last: str) -> str:
        middle = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([row[0].ljust(widths[0]), *middle, last]).rstrip()

    note = (
        "precision = hits/k; recall = hits/held-out tracks of the user; map, ndcg as implicit's; "
        "coverage = distinct recommended tracks / catalog; "
        f"{NEXT_HIT} = share of a user's tracks whose similar list holds a held-out one"
    )
    if metric:
        note += f"; selection by {metric}@{k}"
    return "\n".join([*map(render, rows, params), note])

"""One training run in Spark: holdout, baselines, the search and decision (ml.selection), the
serving fit and the lists, with MLlib's ALS. MLlib has only ALS, so the search tries ALS
challengers only (the other families are implicit's, on the driver). The serving model is a
cold fit on all data (MLlib cannot start from given factors). "Play next" is the serving
model's item-factor neighbours (ml.play_next's sequence models need every listen in the
driver), judged by `next_hit` on the holdout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import functions as F

from ml.baselines import GENRE_POPULARITY, POPULARITY
from ml.config import MlConfig
from ml.evaluate import NEXT_HIT, Scored
from ml.mllib.als import MllibFit, fit, top_k_unheard
from ml.mllib.data import SparkMarts, read_marts
from ml.mllib.lists import SparkLists, build_lists, model_similar, popularity_similar
from ml.mllib.metrics import next_hit, ranking_metrics
from ml.mllib.popularity import popularity_top_k
from ml.mllib.split import SparkHoldout, leave_k_out
from ml.params import AlsParams, ModelParams, Params
from ml.registry import ModelRun
from ml.selection import Decision, decide_search, model_run_rows, search
from moovitamix.errors import one_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
TRAINER = "mllib"  # metrics.trainer of its ml.model_runs rows (the driver path's have none)
ALS_FAMILY = "als"
PLAY_NEXT = "mllib_item_factors"  # the published "play next": the ALS item factors' neighbours


class IdsTooLarge(ValueError):
    """MLlib's ALS takes 32-bit ids; the message is one line."""


def evaluate_baselines(marts: SparkMarts, holdout: SparkHoldout, k: int) -> dict[str, Scored]:
    """Both baselines on the holdout, popularity counted on its training split."""
    tracks = marts.listens.select("track_id").distinct()
    users = marts.users.join(holdout.eval_users, "user_id", "right")
    results: dict[str, Scored] = {}
    for name, who in (
        (POPULARITY, users.withColumn("genre", F.lit(None).cast("string"))),
        (GENRE_POPULARITY, users),
    ):
        lists = popularity_top_k(
            holdout.train, tracks, marts.track_genres, who, holdout.train, k, marts.n_users
        )
        metrics, per_user = ranking_metrics(lists, holdout, k, marts.n_catalog_tracks)
        results[name] = Scored(name, metrics, per_user=per_user)
    return results


def fit_on(
    marts: SparkMarts, params: ModelParams, blocks: int, holdout: SparkHoldout | None = None
) -> MllibFit:
    """MLlib ALS on the holdout's training split, or on all listens without a holdout."""
    counts, n_pairs = (
        (marts.listens, marts.n_pairs) if holdout is None else (holdout.train, holdout.n_train)
    )
    return fit(
        counts,
        params,
        n_users=marts.n_users,
        n_tracks=marts.n_tracks,
        n_pairs=n_pairs,
        blocks=blocks,
    )


def evaluate_model(
    marts: SparkMarts, holdout: SparkHoldout, params: ModelParams, name: str, config: MlConfig
) -> tuple[Scored, MllibFit | None]:
    """Fit on the training split and score; a failing fit is a result with `error`."""
    k = config.evaluation.k
    try:
        fitted = fit_on(marts, params, config.spark.als_blocks, holdout)
        lists = top_k_unheard(fitted.model, holdout.eval_users, holdout.train, k, marts.n_tracks)
        metrics, per_user = ranking_metrics(lists, holdout, k, marts.n_catalog_tracks)
    except (PySparkException, Py4JError, ArithmeticError, MemoryError) as exc:
        log.warning("candidate %s (%s) failed: %s", name, params.label(), one_line(exc))
        return Scored(name, {}, params, error=f"{type(exc).__name__}: {one_line(exc)}"), None
    return Scored(name, metrics, params, fitted.fit_seconds, per_user=per_user), fitted


def next_track_metrics(
    marts: SparkMarts, holdout: SparkHoldout, fitted: MllibFit | None, k: int, scoring: str
) -> dict[str, float]:
    """As ml.evaluate.next_track_metrics: `next_hit`@k of the model's "play next" lists (left
    out without a model) and of both baselines' (popularity counted on the training split)."""
    out = {
        f"{NEXT_HIT}_{POPULARITY}": next_hit(
            popularity_similar(marts, holdout.train, k, by_genre=False), holdout, k
        ),
        f"{NEXT_HIT}_{GENRE_POPULARITY}": next_hit(
            popularity_similar(marts, holdout.train, k, by_genre=True), holdout, k
        ),
    }
    if fitted is not None:
        out = {NEXT_HIT: next_hit(model_similar(fitted.model, k, scoring), holdout, k), **out}
    return out


def als_only(config: MlConfig, champion: Params | None) -> tuple[MlConfig, AlsParams]:
    """The config with ALS as the only searched family (MLlib has no other), and the ALS
    parameters refit as the champion: the champion's if it is ALS, else the config's [model]
    if it is, else ALS' defaults; each substitution is logged."""
    search = config.search.model_copy(update={"families": (ALS_FAMILY,)})
    model = config.model if isinstance(config.model, AlsParams) else AlsParams()
    if model is not config.model:
        log.info("MLlib has only ALS: [model] (%s) replaced by ALS defaults", config.model.label())
    skipped = [f for f in config.search.families if f != ALS_FAMILY]
    if skipped:
        log.info("MLlib has only ALS: the search skips %s", ", ".join(skipped))
    start = champion if isinstance(champion, AlsParams) else model
    if champion is not None and start is not champion:
        log.info(
            "MLlib has only ALS: champion %s not refit, %s instead", champion.label(), start.label()
        )
    return config.model_copy(update={"search": search, "model": model}), start


@dataclass
class MllibRun:
    """What ml.train needs to record and publish a run trained in Spark."""

    candidates: list[Scored]  # the champion's refit first, then challengers
    baselines: dict[str, Scored]
    decision: Decision
    split: tuple[str, str, dict[str, int]]  # (kind, reason, sizes) for ml.model_runs
    sizes: dict[str, int]  # n_users, n_tracks, n_interactions (ml.model_runs)
    play_next: dict[str, float | str]  # the published "play next": model, next_hit@k figures
    lists: SparkLists  # lazy DataFrames: write them once (ml.mllib.lists.write_lists)
    serving: MllibFit | None  # the serving model (None when a baseline is published)
    timings: dict[str, float] = field(default_factory=dict)
    marts: SparkMarts | None = None

    def release(self) -> None:
        """Drop the cached DataFrames (after the lists are written)."""
        if self.marts is not None:
            self.marts.unpersist()


def run_mllib(
    spark: SparkSession,
    schema: str,
    config: MlConfig,
    *,
    champion: Params | None = None,
    today: date | None = None,
    seed: int | None = None,
) -> MllibRun:
    """Evaluate, select and fit the serving model in Spark; the lists are returned lazy.
    `champion` is the current champion's parameters (None: the config's [model]; ALS only,
    see `als_only`); `seed` the split's (None: evaluation.seed)."""
    started = time.perf_counter()
    marts = read_marts(spark, schema)
    try:
        return _run(marts, config, champion, today, seed, started)
    except BaseException:
        marts.unpersist()
        raise


def _run(
    marts: SparkMarts,
    config: MlConfig,
    champion: Params | None,
    today: date | None,
    seed: int | None,
    started: float,
) -> MllibRun:
    if not marts.int_ids:
        raise IdsTooLarge(
            "MLlib ALS takes 32-bit ids: a user_id or track_id of fct_listens is beyond "
            f"{2**31 - 1}"
        )
    timings: dict[str, float] = {}
    config, start = als_only(config, champion)
    holdout = leave_k_out(marts.listens, config.evaluation, seed)
    log.info("%s", holdout.reason)
    timings["read and split"] = time.perf_counter() - started
    k, scoring = config.evaluation.k, config.publish.similar_scoring
    try:
        t0 = time.perf_counter()
        baselines = evaluate_baselines(marts, holdout, k)
        found = search(
            lambda params, name, _: evaluate_model(marts, holdout, params, name, config),
            start,
            config,
            today or date.today(),
            k,
        )
        candidates = found.candidates
        decision, winner_fit = decide_search(found, baselines, config)
        timings["evaluate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        next_hits = next_track_metrics(marts, holdout, winner_fit, k, scoring)
        timings["play next (next_hit)"] = time.perf_counter() - t0
        del winner_fit
    finally:
        holdout.unpersist()
    play_next: dict[str, float | str] = {
        "model": f"{PLAY_NEXT} ({scoring})" if decision.serving is not None else GENRE_POPULARITY,
        "fold": "validation",
        **next_hits,
    }
    serving = None
    if decision.serving is not None:
        winner = candidates[decision.serving]
        assert isinstance(winner.params, ModelParams)
        serving = fit_on(marts, winner.params, config.spark.als_blocks)
        timings["fit on all data"] = serving.fit_seconds
    lists = build_lists(
        marts,
        None if serving is None else serving.model,
        k=config.publish.k,
        similar_k=config.publish.similar_k,
        scoring=config.publish.similar_scoring,
        baseline=decision.baseline or GENRE_POPULARITY,
    )
    return MllibRun(
        candidates=candidates,
        baselines=baselines,
        decision=decision,
        split=(holdout.kind, holdout.reason, holdout.sizes()),
        sizes={
            "n_users": marts.n_users,
            "n_tracks": marts.n_tracks,
            "n_interactions": marts.n_pairs,
        },
        play_next=play_next,
        lists=lists,
        serving=serving,
        timings=timings,
        marts=marts,
    )


def model_runs(
    run: MllibRun,
    run_id: str,
    trained_at: datetime,
    config: MlConfig,
    refit_of: str | None = None,
) -> list[ModelRun]:
    """The ml.model_runs rows of a run trained in Spark, shaped as ml.train writes them (ids
    `<run_id>-mNN`, statuses from the decision, a row for a published baseline), with
    `metrics.trainer = "mllib"`; no artifact (the lists are what is published). There is no
    test fold: the serving row's `test` holds only the "play next" figures (on validation).
    `refit_of` is the champion's model_run_id whose parameters were refit."""
    return model_run_rows(
        run_id,
        trained_at,
        candidates=run.candidates,
        baselines=run.baselines,
        decision=run.decision,
        config=config,
        split=run.split,
        sizes=run.sizes,
        test={"play_next": run.play_next},
        refit_of=refit_of,
        serving_fit_seconds=run.serving.fit_seconds if run.serving is not None else None,
        extra={"trainer": TRAINER},
    )

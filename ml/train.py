"""One training run: read the marts, judge champion, challengers and baselines on one holdout,
refit the winner on all data, save it, publish the lists. `run_training` is the daily step.

Order of a run (each step is logged with its time):
 1. read marts.fct_listens into the user x track matrix, the users' favorite genres and the
    tracks' genres, and the current champion from ml.model_runs;
 2. split a per-user holdout; score both baselines and the champion's parameters refit on
    today's training split; then challengers until the time budget or max_challengers;
 3. decide (ml.selection); refit the winner on all data; save it under artifacts/models/;
 4. build every user's top-k and every track's similar tracks; publish them and the
    ml.model_runs rows in one transaction (ml.publish); apply artifact retention.
Any failure before the publish's commit leaves yesterday's recommendations in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import psycopg
from implicit.cpu.als import AlternatingLeastSquares

from ml.baselines import GENRE_POPULARITY, Popularity
from ml.config import MlConfig, ModelParams, load_config
from ml.evaluate import (
    NEXT_HIT,
    EvaluationData,
    NotEnoughData,
    Scored,
    baseline_next_hits,
    evaluate_baselines,
    evaluate_model,
    leave_k_out,
    model_next_hit,
    next_track_metrics,
)
from ml.interactions import (
    MARTS,
    NO_GENRE,
    Catalog,
    Interactions,
    MartsNotReady,
    check_marts,
    load_catalog,
    load_interactions,
)
from ml.lake_lists import LakeLists
from ml.lists import ALS, similar_tracks, user_top_tracks
from ml.model import REFIT_ITERATIONS, FittedModel, refit, single_threaded_blas
from ml.publish import (
    PublishError,
    PublishHook,
    discard_staged,
    publish,
    similar_columns,
    stage,
    staged_table_names,
    swap_in,
    user_columns,
)
from ml.registry import (
    Champion,
    ModelRun,
    apply_retention,
    current_champion,
    save_model,
)
from ml.selection import (
    CHAMPION,
    Decision,
    challenger_params,
    decide,
    model_run_id,
    model_run_rows,
)
from moovitamix.alerts import Alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.publication import Publication
from moovitamix.settings import Settings
from moovitamix.warehouse import connect, open_warehouse

log = logging.getLogger(__name__)
STEP = "train"


class TrainingFailed(RuntimeError):
    """The run failed and published nothing; the message is one line."""


@dataclass(frozen=True)
class Inputs:
    interactions: Interactions
    catalog: Catalog
    champion: Champion | None

    def favorite_genre_of_rows(self) -> np.ndarray:
        """The favorite genre code of each matrix row's user (-1: none, or not in dim_users)."""
        catalog = self.catalog
        pos = np.searchsorted(catalog.user_ids, self.interactions.user_ids)
        pos = np.minimum(pos, max(len(catalog.user_ids) - 1, 0))
        if len(catalog.user_ids) == 0:
            return np.full(self.interactions.n_users, NO_GENRE, dtype=np.int32)
        found = catalog.user_ids[pos] == self.interactions.user_ids
        return np.where(found, catalog.favorite_genre[pos], NO_GENRE).astype(np.int32)


@dataclass
class TrainResult:
    run_id: str
    source: str  # 'als', or the baseline published
    serving_model_run_id: str
    promoted: bool  # a challenger replaced the champion
    reason: str
    metric: str
    k: int
    metrics: dict[str, float]  # the serving model's holdout metrics
    baseline_metrics: dict[str, dict[str, float]]
    model_runs: list[ModelRun]
    rows_published: dict[str, int]
    artifact_path: Path | None
    alerts: list[Alert] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def of(
        cls,
        run_id: str,
        config: MlConfig,
        decision: Decision,
        candidates: Sequence[Scored],
        baselines: dict[str, Scored],
        runs: list[ModelRun],
        *,
        k: int,
        rows: dict[str, int],
        artifact_path: Path | None,
        timings: dict[str, float],
        started: float,
    ) -> TrainResult:
        """The result of a run that scored `candidates` and `baselines` and decided, whichever
        trainer ran it (implicit in the driver, or MLlib in Spark: ml/train_spark.py)."""
        served = (
            baselines[decision.baseline]
            if decision.baseline is not None
            else candidates[decision.serving or 0]
        )
        serving_run = next(run for run in runs if run.status == CHAMPION)
        return cls(
            run_id=run_id,
            source=decision.baseline or ALS,
            serving_model_run_id=serving_run.model_run_id,
            promoted=decision.promoted,
            reason=decision.reason,
            metric=config.selection.metric,
            k=k,
            metrics=served.metrics,
            baseline_metrics={name: s.metrics for name, s in baselines.items()},
            model_runs=runs,
            rows_published=rows,
            artifact_path=artifact_path,
            alerts=_alerts(run_id, config, decision, candidates, baselines),
            timings=timings,
            seconds=time.perf_counter() - started,
        )

    @property
    def summary(self) -> str:
        best_baseline = max(self.baseline_metrics.values(), key=lambda m: m[self.metric])
        outcome = (
            "challenger promoted"
            if self.promoted
            else "champion kept"
            if self.source == ALS
            else f"baseline {self.source} published (ALS lost)"
        )
        return (
            f"{outcome}: {self.metric}@{self.k} {self.metrics[self.metric]:.4f} "
            f"(best baseline {best_baseline[self.metric]:.4f}); "
            f"{self.rows_published.get('user_top_tracks', 0):,} user rows, "
            f"{self.rows_published.get('similar_tracks', 0):,} similar-track rows; "
            f"model run {self.serving_model_run_id}"
        )


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        log.info("%s: %.1fs", name, self.timings[name])


def read_inputs(
    url: ConnectionURL, marts_schema: str = MARTS, settings: Settings | None = None
) -> Inputs:
    """The marts (from Postgres, or from Spark on the Spark engine) and the current champion
    (ml.model_runs: always in the Postgres warehouse)."""
    on_spark = settings is not None and settings.engine == "spark"
    with connect(url, autocommit=True) as conn:
        try:
            if on_spark:
                from ml.spark_marts import read_spark_marts

                interactions, catalog = read_spark_marts(settings, marts_schema)
            else:
                check_marts(conn, marts_schema)
                interactions = load_interactions(conn, marts_schema)
            if interactions.n_interactions == 0:
                raise TrainingFailed(
                    f"{marts_schema}.fct_listens has no listens: nothing to train on"
                )
            if not on_spark:
                catalog = load_catalog(conn, interactions, marts_schema)
            champion = current_champion(conn)
        except MartsNotReady as exc:
            raise TrainingFailed(str(exc)) from None
        except psycopg.Error as exc:
            raise TrainingFailed(f"reading the marts failed: {one_line(exc)}") from None
    return Inputs(interactions, catalog, champion)


def evaluation_data(inputs: Inputs, config: MlConfig) -> EvaluationData:
    try:
        holdout = leave_k_out(inputs.interactions.matrix, config.evaluation)
    except NotEnoughData as exc:
        raise TrainingFailed(str(exc)) from None
    return EvaluationData(
        holdout,
        inputs.favorite_genre_of_rows(),
        inputs.catalog.track_genres,
        inputs.catalog.n_catalog_tracks,
        config.evaluation.k,
    )


@dataclass
class SearchResult:
    """The candidates scored on the holdout (the champion's refit first) and the training-split
    fits that can still serve: the champion's and the best challenger's so far (ml.selection
    serves one of these two), so at most two models are held at a time."""

    candidates: list[Scored]
    fits: dict[int, FittedModel]


def _search(
    data: EvaluationData,
    config: MlConfig,
    champion_params: ModelParams,
    today: date,
) -> SearchResult:
    """The champion's refit first, with its "play next" metrics, then challengers within the
    time budget."""
    threads = config.runtime.num_threads
    started = time.perf_counter()
    champion, champion_fit = evaluate_model(data, champion_params, "champion", threads)
    spent = [time.perf_counter() - started]
    if champion_fit is not None:
        champion.metrics.update(
            next_track_metrics(data, champion_fit, config.publish.similar_scoring)
        )
    log.info("champion %s: %s", champion_params.label(), _metrics_line(champion, data.k))
    found = SearchResult([champion], {} if champion_fit is None else {0: champion_fit})
    proposals = challenger_params(champion_params, config.model, config.search, today)
    proposals = proposals[: config.selection.max_challengers]
    search_started = time.perf_counter()
    for i, params in enumerate(proposals, start=1):
        elapsed = time.perf_counter() - search_started
        expected = float(np.mean(spent))
        if elapsed + expected > config.selection.time_budget_s:
            log.info(
                "time budget %.0fs reached after %d challenger(s); %d not tried",
                config.selection.time_budget_s,
                i - 1,
                len(proposals) - i + 1,
            )
            break
        t0 = time.perf_counter()
        scored, fitted = evaluate_model(data, params, f"challenger-{i}", threads)
        spent.append(time.perf_counter() - t0)
        log.info("challenger-%d %s: %s", i, params.label(), _metrics_line(scored, data.k))
        found.candidates.append(scored)
        _keep_if_best(found, i, fitted, config.selection.metric)
    return found


def _keep_if_best(found: SearchResult, i: int, fitted: FittedModel | None, metric: str) -> None:
    """Keep challenger i's fit if it is the best challenger so far (ties: the earlier one, as
    ml.selection); the previous best challenger's fit is dropped."""
    if fitted is None:
        return
    held = [j for j in found.fits if j != 0]
    if held and found.candidates[held[0]].score(metric) >= found.candidates[i].score(metric):
        return
    for j in held:
        del found.fits[j]
    found.fits[i] = fitted


def _winner_fit(
    found: SearchResult, decision: Decision, data: EvaluationData, config: MlConfig
) -> FittedModel | None:
    """The serving candidate's training-split fit (None when a baseline serves), with its
    "play next" metrics recorded when it is a promoted challenger; the other fit is dropped."""
    if decision.serving is None:
        found.fits.clear()
        return None
    fitted = found.fits.pop(decision.serving, None)
    found.fits.clear()
    winner = found.candidates[decision.serving]
    if fitted is not None and NEXT_HIT not in winner.metrics:
        winner.metrics.update(next_track_metrics(data, fitted, config.publish.similar_scoring))
    return fitted


def _metrics_line(scored: Scored, k: int) -> str:
    if scored.error:
        return f"failed ({scored.error})"
    return ", ".join(f"{name}@{k} {value:.4f}" for name, value in scored.metrics.items())


def _model_runs(
    run_id: str,
    trained_at: datetime,
    inputs: Inputs,
    data: EvaluationData,
    candidates: Sequence[Scored],
    baselines: dict[str, Scored],
    decision: Decision,
    config: MlConfig,
    artifact_path: Path | None,
    serving_fit_seconds: float | None,
) -> list[ModelRun]:
    return model_run_rows(
        run_id,
        trained_at,
        candidates=candidates,
        baselines=baselines,
        decision=decision,
        config=config,
        k=data.k,
        holdout_sizes=data.holdout.sizes(),
        sizes={
            "n_users": inputs.interactions.n_users,
            "n_tracks": inputs.interactions.n_tracks,
            "n_interactions": inputs.interactions.n_interactions,
        },
        refit_of=inputs.champion.model_run_id if inputs.champion is not None else None,
        serving_fit_seconds=serving_fit_seconds,
        artifact_path=str(artifact_path) if artifact_path else None,
    )


def _serve(
    settings: Settings,
    config: MlConfig,
    run_id: str,
    trained_at: datetime,
    inputs: Inputs,
    winner: Scored,
    winner_fit: FittedModel | None,
    model_run_id: str,
    timer: _Timer,
) -> tuple[AlternatingLeastSquares, Path, float]:
    """Refit the winner on all data (its training-split fit continued, ml.model.refit) and save
    it; (model, artifact, fit seconds)."""
    assert winner.params is not None
    interactions = inputs.interactions
    with timer("refit on all data"):
        fitted = refit(interactions.matrix, winner.params, winner_fit, config.runtime.num_threads)
    meta = {
        "model_run_id": model_run_id,
        "run_id": run_id,
        "trained_at": trained_at.isoformat(),
        "params": winner.params.to_json(),
        "serving_fit": (
            f"warm: the training-split fit continued {REFIT_ITERATIONS} iterations on all data"
            if fitted.warm_start
            else "cold: fit on all data"
        ),
        "holdout_metrics": winner.metrics,
        "n_users": interactions.n_users,
        "n_tracks": interactions.n_tracks,
        "n_interactions": interactions.n_interactions,
    }
    with timer("save artifact"):
        path = save_model(
            config.artifacts.root_path(settings.project_root),
            model_run_id,
            fitted.als,
            interactions.user_ids,
            interactions.track_ids,
            meta,
        )
    return fitted.als, path, fitted.fit_seconds


def _alerts(
    run_id: str,
    config: MlConfig,
    decision: Decision,
    candidates: Sequence[Scored],
    baselines: dict[str, Scored],
) -> list[Alert]:
    if decision.baseline is None:
        return []
    metric = config.selection.metric
    return [
        Alert(
            severity="warning",
            title=f"no ALS model beat the popularity baselines; published {decision.baseline}",
            run_id=run_id,
            step=STEP,
            details={
                "metric": f"{metric}@{config.evaluation.k}",
                "best_als": round(max(c.score(metric) for c in candidates), 4),
                decision.baseline: round(baselines[decision.baseline].score(metric), 4),
            },
        )
    ]


def _outgrows_the_driver(settings: Settings, schema: str, config: MlConfig) -> bool:
    """On the Spark engine: more (user, track) pairs than `[spark] mllib_above_pairs`, so the
    training runs in Spark (ml/train_spark.py) instead of collecting the matrix."""
    from ml.interactions import MartsNotReady
    from ml.mllib.data import count_pairs
    from moovitamix.spark import spark_session

    try:
        pairs = count_pairs(spark_session(settings), schema)
    except MartsNotReady as exc:
        raise TrainingFailed(str(exc)) from None
    above = pairs > config.spark.mllib_above_pairs
    if above:
        log.info(
            "%s.fct_listens has %d pairs (> %d): training in Spark with MLlib",
            schema,
            pairs,
            config.spark.mllib_above_pairs,
        )
    return above


def run_training(
    settings: Settings,
    run_id: str,
    *,
    config: MlConfig | None = None,
    overrides: Sequence[str] = (),
    warehouse: ConnectionURL | None = None,
    champion_from_config: bool = False,
    today: date | None = None,
    publish_hook: PublishHook | None = None,
    publication: Publication | None = None,
) -> TrainResult:
    """The daily training step. Raises TrainingFailed (one line) when nothing was published;
    yesterday's recommendations then stay. `publish_hook` is for tests (ml.publish).

    With a `publication` (the daily run's write-audit-publish) it reads the candidate marts,
    stages the lists and registers their publication (the swap, the ml.model_runs rows, then
    artifact retention) with the run's; `rows_published` then counts the staged rows."""
    started = time.perf_counter()
    config = config or load_config(overrides=overrides)
    url = warehouse or open_warehouse(settings)
    timer = _Timer()
    trained_at = datetime.now(UTC)
    schema = publication.candidate if publication is not None else MARTS
    if settings.engine == "spark" and _outgrows_the_driver(settings, schema, config):
        from ml.train_spark import train_in_spark

        return train_in_spark(
            settings,
            run_id,
            config,
            url,
            schema,
            publication=publication,
            champion_from_config=champion_from_config,
            today=today,
        )
    with single_threaded_blas():
        with timer("read marts"):
            inputs = read_inputs(url, schema, settings)
        with timer("evaluate"):
            data = evaluation_data(inputs, config)
            baselines = evaluate_baselines(data)
            for name, scored in baselines.items():
                log.info("baseline %s: %s", name, _metrics_line(scored, data.k))
            champion_params = (
                inputs.champion.params
                if inputs.champion is not None and not champion_from_config
                else config.model
            )
            found = _search(data, config, champion_params, today or trained_at.date())
            candidates = found.candidates
            decision = decide(
                candidates, baselines, config.selection.metric, config.selection.min_improvement
            )
            winner_fit = _winner_fit(found, decision, data, config)
        log.info("decision: %s", decision.reason)

        als: AlternatingLeastSquares | None = None
        artifact_path: Path | None = None
        serving_fit: float | None = None
        if decision.serving is not None:
            als, artifact_path, serving_fit = _serve(
                settings,
                config,
                run_id,
                trained_at,
                inputs,
                candidates[decision.serving],
                winner_fit,
                model_run_id(run_id, decision.serving),
                timer,
            )
        winner_fit = None  # the serving model replaces it
        runs = _model_runs(
            run_id,
            trained_at,
            inputs,
            data,
            candidates,
            baselines,
            decision,
            config,
            artifact_path,
            serving_fit,
        )
        serving_run = next(run for run in runs if run.status == CHAMPION)

        with timer("build lists"):
            interactions = inputs.interactions
            popularity = Popularity(interactions.matrix, inputs.catalog.track_genres)
            user_lists = user_top_tracks(
                interactions,
                inputs.catalog,
                popularity,
                config.publish.k,
                als=als,
                baseline=decision.baseline or GENRE_POPULARITY,
            )
            similar_lists = similar_tracks(
                interactions,
                inputs.catalog,
                popularity,
                config.publish.similar_k,
                als=als,
                scoring=config.publish.similar_scoring,
            )

        def retention() -> None:
            if artifact_path is not None:
                apply_retention(
                    artifact_path.parent, config.artifacts.keep, {serving_run.model_run_id}
                )

        generated_at = datetime.now(UTC)  # the lists' time, in Postgres and in the lake
        with timer("stage" if publication is not None else "publish"):
            try:
                with connect(url, autocommit=True) as conn:
                    if publication is not None:
                        rows = stage(
                            conn,
                            [user_columns(user_lists)],
                            [similar_columns(similar_lists)],
                            model_run_id=serving_run.model_run_id,
                            generated_at=generated_at,
                        )
                    else:
                        rows = publish(
                            conn,
                            user_lists,
                            similar_lists,
                            model_run_id=serving_run.model_run_id,
                            generated_at=generated_at,
                            model_runs=runs,
                            lock_timeout_s=config.publish.lock_timeout_s,
                            hook=publish_hook,
                        )
            except PublishError as exc:
                raise TrainingFailed(str(exc)) from None
            except psycopg.Error as exc:
                raise TrainingFailed(
                    f"publishing failed, yesterday's lists stay: {one_line(exc)}"
                ) from None
    log.info("user_top_tracks sources: %s", user_lists.sources())
    if settings.engine == "spark":  # the lake's copy of the lists, for the data platform
        lake = LakeLists(settings, run_id, keep=config.artifacts.keep)
        with timer("lake lists"):
            lake.write(user_lists, similar_lists, serving_run.model_run_id, generated_at=trained_at)
        if publication is not None:
            lake.stage(publication)
        else:
            lake.publish_views()
            lake.retain()
    if publication is not None:
        publication.stage(
            "recommendations",
            lambda conn: swap_in(conn, runs),
            tables=staged_table_names(),
            after_commit=retention,
            discard=discard_staged,
        )
    else:
        retention()

    return TrainResult.of(
        run_id,
        config,
        decision,
        candidates,
        baselines,
        runs,
        k=data.k,
        rows=rows,
        artifact_path=artifact_path,
        timings=timer.timings,
        started=started,
    )


def run_evaluation(
    settings: Settings,
    *,
    config: MlConfig | None = None,
    warehouse: ConnectionURL | None = None,
) -> tuple[list[Scored], EvaluationData]:
    """Baselines, the current champion's parameters and the config's, on today's holdout, with
    the "play next" lists' next_hit. Writes nothing."""
    config = config or load_config()
    url = warehouse or open_warehouse(settings)
    threads = config.runtime.num_threads
    with single_threaded_blas():
        inputs = read_inputs(url, MARTS, settings)
        data = evaluation_data(inputs, config)
        baselines = evaluate_baselines(data)
        for name, next_hit in baseline_next_hits(data).items():
            baselines[name].metrics[NEXT_HIT] = next_hit
        results = list(baselines.values())
        candidates = []
        if inputs.champion is not None:
            name = f"champion ({inputs.champion.model_run_id})"
            candidates.append((name, inputs.champion.params))
        if inputs.champion is None or inputs.champion.params != config.model:
            candidates.append(("config [model]", config.model))
        for name, params in candidates:
            scored, fitted = evaluate_model(data, params, name, threads)
            if fitted is not None:
                scored.metrics[NEXT_HIT] = model_next_hit(
                    data, fitted, config.publish.similar_scoring
                )
            results.append(scored)
    return results, data

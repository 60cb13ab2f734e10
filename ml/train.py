"""One training run: judge the champion's refit, challengers and both baselines on one holdout,
refit the winner on all data, save it, and publish both lists with the ml.model_runs rows.
A failure before the publish's commit leaves yesterday's recommendations."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import scipy.sparse as sp

from ml import families
from ml.baselines import GENRE_POPULARITY
from ml.budget import CHURN, EVALUATE, LISTS, PLAY_NEXT, READ, REFIT, SAVE, STAGE, TEST, StepBudget
from ml.config import MlConfig, load_config
from ml.evaluate import (
    EvaluationData,
    Scored,
    evaluate_baselines,
    evaluate_model,
    lists_for_test,
    report_on_test,
)
from ml.families import ItemKnnParams, Params, Recommender
from ml.families.base import single_threaded_blas
from ml.interactions import (
    MARTS,
    Catalog,
    Interactions,
    MartsNotReady,
    check_marts,
    load_catalog,
    load_interactions,
    positions_of,
)
from ml.lake_lists import LakeLists
from ml.lists import MODEL, build_lists
from ml.play_next import (
    Histories,
    PlayNext,
    PlayNextSettings,
    choose_play_next,
    filled_lists,
    histories,
)
from ml.publish import (
    LivePlayNext,
    PublishError,
    live_play_next,
    published_user_parts,
    register_swap,
    similar_columns,
    stage,
    user_columns,
)
from ml.quality import Churn
from ml.registry import (
    Champion,
    ModelRun,
    apply_retention,
    current_champion,
    recent_fit_seconds,
    recent_step_timings,
    save_model,
)
from ml.selection import CHAMPION, Decision, decide_search, model_run_id, model_run_rows, search
from ml.sequences import Sequences, TrackFeatures, load_sequences, load_track_features
from ml.split import NotEnoughData, split
from moovitamix.alerts import Alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.publication import Publication, PublishFailed, discard, publish
from moovitamix.settings import Settings
from moovitamix.warehouse import WarehouseUnreachable, connect

log = logging.getLogger(__name__)
STEP = "train"


class TrainingFailed(RuntimeError):
    """The run failed and published nothing; the message is one line."""


@dataclass(frozen=True)
class Inputs:
    interactions: Interactions
    catalog: Catalog
    sequences: Sequences | None  # None: read when "play next" needs them, and let go after
    tracks: TrackFeatures
    champion: Champion | None
    fit_seconds: dict[str, float]  # each family's latest fit time, as ml.model_runs has it
    step_timings: dict[str, float] = field(default_factory=dict)  # recent_step_timings'


@dataclass
class TrainResult:
    run_id: str
    source: str  # the serving model's family, or the baseline published
    serving_model_run_id: str
    promoted: bool  # a challenger replaced the champion
    reason: str
    metric: str
    k: int
    split: str  # "time" or "holdout"
    metrics: dict[str, float]  # the serving model's validation metrics
    test: dict[str, dict]  # the test report (ml.evaluate.report_on_test) of what serves
    play_next: str  # the published "play next" model
    baseline_metrics: dict[str, dict[str, float]]
    model_runs: list[ModelRun]
    rows_published: dict[str, int]
    artifact_path: Path | None
    alerts: list[Alert] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    passed_over: int = 0  # challengers not tried: the selection's time budget was spent
    skipped: list[str] = field(default_factory=list)  # what the step's time budget gave up
    time_budget_s: float = 0.0  # the step's (0: no limit)

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
        split_kind: str = "holdout",
        test: dict[str, dict] | None = None,
        play_next: str = "",
        rows: dict[str, int],
        artifact_path: Path | None,
        timings: dict[str, float],
        started: float,
        passed_over: int = 0,
        skipped: Sequence[str] = (),
        time_budget_s: float = 0.0,
    ) -> TrainResult:
        """A decided run's result, from either trainer; a published baseline adds a warning."""
        metric = config.selection.metric
        served = (
            baselines[decision.baseline] if decision.baseline else candidates[decision.serving or 0]
        )
        alerts = []
        if decision.baseline is not None:
            details = {
                "metric": f"{metric}@{config.evaluation.k}",
                "best_model": round(max(c.score(metric) for c in candidates), 4),
                served.name: round(served.score(metric), 4),
            }
            title = f"no model beat the popularity baselines; published {served.name}"
            alerts.append(Alert("warning", title, run_id, STEP, details))
        return cls(
            run_id=run_id,
            source=served.family,
            serving_model_run_id=next(r.model_run_id for r in runs if r.status == CHAMPION),
            promoted=decision.promoted,
            reason=decision.reason,
            metric=metric,
            k=config.evaluation.k,
            split=split_kind,
            metrics=served.metrics,
            test=test or {},
            play_next=play_next,
            baseline_metrics={name: s.metrics for name, s in baselines.items()},
            model_runs=runs,
            rows_published=rows,
            artifact_path=artifact_path,
            alerts=alerts,
            timings=timings,
            seconds=time.perf_counter() - started,
            passed_over=passed_over,
            skipped=list(skipped),
            time_budget_s=time_budget_s,
        )

    @property
    def summary(self) -> str:
        outcome = f"baseline {self.source} published (no model beat it)"
        if self.serving_model_run_id and self.source not in self.baseline_metrics:
            outcome = f"{self.source} {'promoted' if self.promoted else 'kept'}"
        served = self.test.get(MODEL) or self.test.get(self.source) or {}
        quality = f"{self.metric}@{self.k} {self.metrics[self.metric]:.4f} (validation)"
        if self.metric in served:
            m = served[self.metric]
            quality = (
                f"test {self.metric}@{self.k} {m['mean']:.4f} "
                f"[{m['low']:.4f}, {m['high']:.4f}] ({self.split} split)"
            )
        play_next = f"; play next: {self.play_next}" if self.play_next else ""
        passed = f"; {self.passed_over} challenger(s) over budget" if self.passed_over else ""
        if self.skipped:
            passed += f"; over the step's {self.time_budget_s:g}s budget, skipped: " + ", ".join(
                self.skipped
            )
        return (
            f"{outcome}: {quality}{play_next}{passed}; "
            f"{self.rows_published.get('user_top_tracks', 0):,} user rows, "
            f"{self.rows_published.get('similar_tracks', 0):,} similar-track rows; "
            f"model run {self.serving_model_run_id}"
        )


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Our own one-line errors, and the database's with `what` failed, as TrainingFailed."""
    try:
        yield
    except (MartsNotReady, NotEnoughData, PublishError, PublishFailed) as exc:
        raise TrainingFailed(str(exc)) from None
    except psycopg.Error as exc:
        raise TrainingFailed(f"{what}: {one_line(exc)}") from None


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - started, 3)
    log.info("%s: %.1fs", name, timings[name])


def catalog_counts(interactions: Interactions, catalog_ids: np.ndarray) -> sp.csr_matrix:
    """The listen matrix with its columns in the catalog's (sorted `catalog_ids`) space; pairs
    of tracks outside the catalog dropped."""
    cols = positions_of(catalog_ids, interactions.track_ids)[interactions.matrix.indices]
    keep = cols >= 0
    rows = np.repeat(np.arange(interactions.n_users), np.diff(interactions.matrix.indptr))
    return sp.csr_matrix(
        (interactions.matrix.data[keep], (rows[keep], cols[keep])),
        shape=(interactions.n_users, len(catalog_ids)),
    )


def kept_play_next(
    live: LivePlayNext, interactions: Interactions, tracks: TrackFeatures, k: int
) -> PlayNext:
    """The published "play next" lists stay; the catalog tracks they lack (new since) get the
    fill's lists (artist, genre, global) on today's listens."""
    new = np.setdiff1d(tracks.track_ids, live.track_ids)
    counts = catalog_counts(interactions, tracks.track_ids)
    return filled_lists(counts, tracks, k, new, live.model)


def read_inputs(
    url: ConnectionURL, marts_schema: str = MARTS, settings: Settings | None = None
) -> Inputs:
    """The marts (from Postgres, or Spark on its engine; the sequences from Postgres are read
    later, by read_sequences) and the champion (always Postgres)."""
    with connect(url, autocommit=True) as conn, _failing("reading the marts failed"):
        if settings is not None and settings.engine == "spark":
            from ml.mllib.data import collect_marts

            interactions, catalog, sequences, tracks = collect_marts(settings, marts_schema)
        else:
            check_marts(conn, marts_schema)
            interactions = load_interactions(conn, marts_schema)
            catalog = load_catalog(conn, interactions, marts_schema)
            sequences = None  # the largest input: read_sequences, for "play next" only
            tracks = load_track_features(conn, marts_schema)
        champion = current_champion(conn)
        fit_seconds = recent_fit_seconds(conn)
        step_timings = recent_step_timings(conn)
    if interactions.n_interactions == 0:
        raise TrainingFailed(f"{marts_schema}.fct_listens has no listens: nothing to train on")
    return Inputs(interactions, catalog, sequences, tracks, champion, fit_seconds, step_timings)


def read_sequences(
    url: ConnectionURL, marts_schema: str = MARTS, user_ids: np.ndarray | None = None
) -> Sequences:
    """Every listen of the marts in history order (ml.sequences); `user_ids`: dim_users',
    when read already."""
    with (
        connect(url, autocommit=True) as conn,
        _failing("reading the listening sequences failed"),
    ):
        return load_sequences(conn, marts_schema, user_ids)


def evaluation_data(inputs: Inputs, config: MlConfig) -> EvaluationData:
    with _failing("splitting the listens failed"):
        found = split(inputs.interactions, config.evaluation)
    found = found.sampled(config.evaluation.max_fit_users, config.evaluation.seed)
    log.info("%s", found.reason)
    catalog = inputs.catalog
    user_ids = inputs.interactions.user_ids
    favorite = catalog.favorite_genre_of(user_ids if found.rows is None else user_ids[found.rows])
    return EvaluationData(
        found,
        favorite,
        catalog.track_genres,
        catalog.n_catalog_tracks,
        config.evaluation,
        config.selection.metric,
    )


def play_next_lists(
    sequences: Sequences | Histories, tracks: TrackFeatures, config: MlConfig, threads: int
) -> PlayNext:
    """The "play next" lists of every catalog track (ml.play_next), with implicit's item kNN
    (BM25) as the collaborative candidate: it refits in seconds on each held-out history."""
    knn = ItemKnnParams()

    def collaborative(counts: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        return families.fit(counts.tocsr(), knn, threads).similar(k)

    settings = PlayNextSettings(
        k=config.publish.similar_k,
        **config.play_next.model_dump(),
        bootstrap_samples=config.evaluation.resamples,
        seed=config.evaluation.seed,
    )
    return choose_play_next(sequences, tracks, settings, collaborative=collaborative)


def run_training(
    settings: Settings,
    run_id: str,
    *,
    warehouse: ConnectionURL,
    config: MlConfig | None = None,
    champion_from_config: bool = False,
    publication: Publication | None = None,
    clock: Callable[[], float] = time.perf_counter,
    stop: threading.Event | None = None,
) -> TrainResult:
    """The training step; raises TrainingFailed (one line) when nothing was published. It reads
    the `publication`'s marts (the daily run's candidate), stages the lists and registers their
    swap, model runs and retention with it (rows counted staged); without one (`make train`) the
    run publishes at once through a publication of its own. `clock` (seconds) times the phases
    against `[train] time_budget_s` (ml.budget); once `stop` is set, the next phase raises
    ml.budget.Stopped (the daily run failed beside the step)."""
    config = config or load_config()
    if publication is None:
        own = Publication(run_id, candidate=MARTS, swaps_postgres_marts=False)
        try:
            result = run_training(
                settings,
                run_id,
                warehouse=warehouse,
                config=config,
                champion_from_config=champion_from_config,
                publication=own,
                clock=clock,
                stop=stop,
            )
            with _timed(result.timings, "publish"), _failing("publishing failed"):
                publish(warehouse, own, lock_timeout_s=config.publish.lock_timeout_s)
        except BaseException:
            if own.actions:  # best effort, never hiding the error: the next stage replaces them
                with suppress(psycopg.Error, WarehouseUnreachable):
                    discard(warehouse, own)
            raise
        result.seconds += result.timings["publish"]
        return result
    started, trained_at = time.perf_counter(), datetime.now(UTC)
    schema = publication.candidate
    if settings.engine == "spark":
        from ml.train_spark import train_in_spark_if_large

        trained = train_in_spark_if_large(
            settings, run_id, config, warehouse, publication, champion_from_config
        )
        if trained is not None:
            return trained
    budget = StepBudget(config.train.time_budget_s, clock=clock, stop=stop)
    timings = budget.timings
    threads, metric = config.runtime.num_threads, config.selection.metric
    with single_threaded_blas():
        with budget.timed(READ):
            inputs = read_inputs(warehouse, schema, settings)
        budget.recorded = inputs.step_timings
        champion = inputs.champion
        with budget.timed(EVALUATE):
            data = evaluation_data(inputs, config)
            # the first-listen times served the split: let them go (memory)
            inputs = replace(inputs, interactions=replace(inputs.interactions, first_seen=None))
            baselines = evaluate_baselines(data)
            left = budget.left_for_challengers()
            found = search(
                lambda params, name, stop: evaluate_model(data, params, name, threads, stop),
                champion.params if champion and not champion_from_config else config.model,
                config,
                trained_at.date(),
                data.k,
                inputs.fit_seconds,
                step_budget=left,
            )
            if left is not None and left < config.selection.time_budget_s and found.passed_over:
                budget.skip(f"{found.passed_over} challenger(s) (search cut to {left:.1f}s)")
            decision, winner_fit = decide_search(found, baselines, config)
        candidates = found.candidates
        winner = None if decision.serving is None else candidates[decision.serving]
        with budget.timed(TEST):
            serving = None if winner is None else (MODEL, winner.params, winner_fit)
            depth = 0 if winner is None else winner.depth
            lists, test_fit = lists_for_test(data, serving, threads, depth)
            del winner_fit
            test = report_on_test(data, lists, metric, MODEL if winner else decision.baseline)
            del lists
        fitted, artifact_path = None, None
        if winner is not None:
            assert winner.params is not None
            with budget.timed(REFIT):
                fitted = families.fit(inputs.interactions.matrix, winner.params, threads, test_fit)
            del test_fit
            with budget.timed(SAVE):
                serving_id = model_run_id(run_id, decision.serving or 0)
                root = config.artifacts.root_path(settings.data_dir)
                artifact_path = _save(root, serving_id, run_id, trained_at, inputs, winner, fitted)
        live = None  # the published play next, when it is kept
        if settings.engine != "spark" and not budget.fits(PLAY_NEXT, (LISTS, STAGE)):
            with connect(warehouse, autocommit=True) as conn, _failing("reading play next failed"):
                live = live_play_next(conn)
            if live is None:
                log.warning("no published play next to keep: it is refreshed all the same")
        if live is not None:
            with budget.timed("keep play next"):
                k_similar = config.publish.similar_k
                play_next = kept_play_next(live, inputs.interactions, inputs.tracks, k_similar)
            new = len(play_next.track_ids)
            budget.skip(f"play next (kept from {live.kept_from}, {new} new track(s) filled)")
            play_next_report = {"model": live.model, "kept_from": live.kept_from, "filled": new}
        else:
            with budget.timed(PLAY_NEXT):
                listened = inputs.sequences
                if listened is None:
                    listened = read_sequences(warehouse, schema, inputs.catalog.user_ids)
                listened = histories(listened, inputs.tracks.track_ids)  # the sequences let go
                play_next = play_next_lists(listened, inputs.tracks, config, threads)
                del listened
            play_next_report = {"model": play_next.model, **play_next.metrics}
        with budget.timed(LISTS):
            user_lists, similar_lists = build_lists(
                inputs.interactions,
                inputs.catalog,
                inputs.tracks,
                play_next,
                config.publish,
                model=fitted,
                baseline=decision.baseline or GENRE_POPULARITY,
                depth=depth,
            )
        served = test.get(MODEL) or test[decision.baseline or GENRE_POPULARITY]
        if budget.fits(CHURN, (STAGE,)):
            with (
                budget.timed(CHURN),
                _failing("reading the published lists failed"),
                connect(warehouse, autocommit=True) as conn,
            ):
                counted = Churn(user_lists.user_id, user_lists.track_id)
                for users, tracks in published_user_parts(conn):  # yesterday's, part by part
                    counted.add(users, tracks)
                served["churn"] = counted.value
                del counted
        else:
            budget.skip("churn")
        served["sources"] = user_lists.sources()
        alerts = _guardrails(run_id, config, served)
        serving_run = (
            model_run_id(run_id, decision.serving)
            if decision.serving is not None
            else f"{run_id}-{decision.baseline}"
        )
        generated_at = datetime.now(UTC)
        with (
            budget.timed(STAGE),
            _failing("publishing failed, yesterday's lists stay"),
            connect(warehouse, autocommit=True) as conn,
        ):
            parts = [user_columns(user_lists)], [similar_columns(similar_lists)]
            rows = stage(
                conn,
                *parts,
                model_run_id=serving_run,
                generated_at=generated_at,
                keep_similar=live is not None,
            )
        runs = model_run_rows(
            run_id,
            trained_at,
            candidates=candidates,
            baselines=baselines,
            decision=decision,
            config=config,
            split=(data.split.kind, data.split.reason, data.split.sizes()),
            sizes=inputs.interactions.sizes(),
            test={**test, "play_next": play_next_report},
            refit_of=champion.model_run_id if champion is not None else None,
            serving_fit_seconds=fitted.fit_seconds if fitted else None,
            artifact_path=str(artifact_path) if artifact_path else None,
            step={
                "timings_s": dict(timings),
                "time_budget_s": budget.seconds,
                "skipped": list(budget.skipped),
            },
        )
        assert serving_run == next(run for run in runs if run.status == CHAMPION).model_run_id
    log.info("user_top_tracks sources: %s", user_lists.sources())

    def retention() -> None:
        if artifact_path is not None:
            apply_retention(artifact_path.parent, config.artifacts.keep, {serving_run})

    kept = live.model_runs if live is not None else ()
    register_swap(publication, serving_run, runs, after_commit=retention, kept_similar=kept)
    if settings.engine == "spark":  # the lake's copy of the lists, for the data platform
        lake = LakeLists(settings, run_id, keep=config.artifacts.keep)
        with _timed(timings, "lake lists"):
            lake.write(user_lists, similar_lists, serving_run, generated_at=trained_at)
        lake.stage(publication)
    shown = play_next.model if live is None else f"{live.model} kept from {live.kept_from}"
    result = TrainResult.of(
        run_id,
        config,
        decision,
        candidates,
        baselines,
        runs,
        split_kind=data.split.kind,
        test=test,
        play_next=shown,
        rows=rows,
        artifact_path=artifact_path,
        timings=timings,
        started=started,
        passed_over=found.passed_over,
        skipped=budget.skipped,
        time_budget_s=budget.seconds,
    )
    result.alerts += alerts
    return result


def _guardrails(run_id: str, config: MlConfig, served: dict) -> list[Alert]:
    """A warning when the served lists' coverage is below `selection.min_coverage` or their
    churn since yesterday above `selection.max_churn`."""
    limits = config.selection
    crossed = {}
    if served.get("coverage", 1.0) < limits.min_coverage:
        crossed["coverage"] = (round(served["coverage"], 4), f">= {limits.min_coverage}")
    if served.get("churn", 0.0) > limits.max_churn:
        crossed["churn"] = (round(served["churn"], 4), f"<= {limits.max_churn}")
    if not crossed:
        return []
    title = f"served lists cross a guardrail: {', '.join(crossed)}"
    details = {name: f"{value} (wanted {want})" for name, (value, want) in crossed.items()}
    return [Alert("warning", title, run_id, STEP, details)]


def _save(
    root: Path,
    serving_id: str,
    run_id: str,
    trained_at: datetime,
    inputs: Inputs,
    winner: Scored,
    fitted: Recommender,
) -> Path:
    """The serving model's artifact, with what it was fit on and how."""
    meta = {
        "model_run_id": serving_id,
        "run_id": run_id,
        "trained_at": trained_at.isoformat(),
        "family": fitted.params.family,
        "params": fitted.params.to_json(),
        "serving_fit": (
            "warm: the test fit continued on all data" if fitted.warm_start else "fit on all data"
        ),
        "validation_metrics": winner.metrics,
        **inputs.interactions.sizes(),
    }
    ids = (inputs.interactions.user_ids, inputs.interactions.track_ids)
    return save_model(root, serving_id, fitted, *ids, meta)


def run_evaluation(
    settings: Settings, *, warehouse: ConnectionURL, config: MlConfig | None = None
) -> tuple[list[Scored], EvaluationData]:
    """Baselines, the current champion's parameters, the config's and one default of every
    searched family on today's validation split. Writes nothing."""
    config = config or load_config()
    with single_threaded_blas():
        inputs = read_inputs(warehouse, MARTS, settings)
        data = evaluation_data(inputs, config)
        results: list[Scored] = list(evaluate_baselines(data).values())
        candidates: dict[Params, str] = {}  # each params once, under the first name it came by
        if champion := inputs.champion:
            candidates[champion.params] = f"champion ({champion.model_run_id})"
        candidates.setdefault(config.model, "config [model]")
        for family in config.search.families:
            candidates.setdefault(config.search.params(family, {}), f"{family} defaults")
        for params, name in candidates.items():
            results.append(evaluate_model(data, params, name, config.runtime.num_threads)[0])
    return results, data

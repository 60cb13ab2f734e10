"""ml/train.py's run for the Spark engine above `[spark] mllib_above_pairs`: trained by
ml.mllib (ALS only: MLlib has no other family; a per-user holdout, validation only; "play
next" from the ALS item factors), recorded and published the same way, the lists written to
the lake by Spark and COPYed into Postgres batch by batch. No model artifact (the factors stay
in Spark); `metrics.trainer` says "mllib".
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime

from ml.config import MlConfig
from ml.interactions import MartsNotReady
from ml.lake_lists import LakeLists
from ml.mllib.data import use_mllib
from ml.mllib.lists import lake_batches, write_lists
from ml.mllib.run import model_runs, run_mllib
from ml.params import AlsParams
from ml.publish import SIMILAR_TRACKS, USER_TOP_TRACKS, batch_columns, register_swap, stage
from ml.registry import current_champion
from ml.selection import CHAMPION
from ml.train import TrainingFailed, TrainResult  # ml.train imports this module in a call
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Publication
from moovitamix.settings import Settings
from moovitamix.spark import spark_session
from moovitamix.warehouse import connect

log = logging.getLogger(__name__)


def train_in_spark_if_large(
    settings: Settings,
    run_id: str,
    config: MlConfig,
    url: ConnectionURL,
    publication: Publication,
    champion_from_config: bool,
) -> TrainResult | None:
    """The run trained in Spark if the publication's fct_listens has more pairs than `[spark]
    mllib_above_pairs`; None: the driver trains (ml/train.py)."""
    schema = publication.candidate
    try:
        above = use_mllib(spark_session(settings), schema, config)
    except MartsNotReady as exc:
        raise TrainingFailed(str(exc)) from None
    if not above:
        return None
    log.info("%s.fct_listens is above spark.mllib_above_pairs: training with MLlib", schema)
    return train_in_spark(
        settings, run_id, config, url, publication, champion_from_config=champion_from_config
    )


def train_in_spark(
    settings: Settings,
    run_id: str,
    config: MlConfig,
    url: ConnectionURL,
    publication: Publication,
    *,
    champion_from_config: bool = False,
    today: date | None = None,
) -> TrainResult:
    """Evaluate, select and fit in Spark; stage the lists with the run's publication."""
    schema = publication.candidate
    started = time.perf_counter()
    trained_at = datetime.now(UTC)
    with connect(url, autocommit=True) as conn:
        champion = current_champion(conn)
    params = champion.params if champion is not None and not champion_from_config else None
    run = run_mllib(spark_session(settings), schema, config, champion=params, today=today)
    refit = champion is not None and params is not None and isinstance(params, AlsParams)
    try:
        runs = model_runs(
            run, run_id, trained_at, config, refit_of=champion.model_run_id if refit else None
        )
        serving = next(r for r in runs if r.status == CHAMPION)
        generated_at = datetime.now(UTC)
        write_lists(run.lists, settings.lake, run_id, serving.model_run_id, generated_at)
    finally:
        run.release()
    with connect(url, autocommit=True) as conn:
        rows = stage(
            conn,
            batch_columns(lake_batches(settings.lake, "user_top_tracks", run_id), USER_TOP_TRACKS),
            batch_columns(lake_batches(settings.lake, "similar_tracks", run_id), SIMILAR_TRACKS),
            model_run_id=serving.model_run_id,
            generated_at=generated_at,
        )
    register_swap(publication, serving.model_run_id, runs)
    LakeLists(settings, run_id, keep=config.artifacts.keep).stage(publication)
    log.info("trained in Spark (MLlib, ALS only): %s", run.decision.reason)
    return TrainResult.of(
        run_id,
        config,
        run.decision,
        run.candidates,
        run.baselines,
        runs,
        split_kind=run.split[0],
        play_next=str(run.play_next["model"]),
        rows=rows,
        artifact_path=None,
        timings={name: round(s, 3) for name, s in run.timings.items()},
        started=started,
    )

"""The MLlib path's split: a per-user leave-k-out holdout in Spark, for model selection only
(ml.split's "holdout" kind; one validation fold, no test fold). Users with at least
`min_user_tracks` distinct tracks, a seeded sample of at most `max_eval_users`, hide
`holdout_per_user` random pairs each. "Random" is a seeded hash (xxhash64 of the seed and the
ids): the same data and seed give the same split however Spark partitions it.

Why not ml.split's time split here: it needs first-listen times per pair and a second fold
(train + validation refit, judged on test), i.e. one more MLlib fit of the winner; this path
runs only where the data outgrows the driver, and every MLlib fit there is the run's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from ml.config import Evaluation
from ml.split import NotEnoughData

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

HOLDOUT = "holdout"  # ml.split.Split.kind


@dataclass(frozen=True)
class SparkHoldout:
    train: DataFrame  # user_id, track_id, listen_count: the held-out pairs removed
    test: DataFrame  # user_id, track_id: the held-out pairs (the validation fold)
    eval_users: DataFrame  # user_id: the users evaluated
    n_eval: int
    n_eligible: int
    n_train: int
    n_test: int
    per_user: int  # pairs held out per evaluated user

    kind = HOLDOUT

    @property
    def reason(self) -> str:
        """One line for the log and ml.model_runs (as ml.split's holdout reason reads)."""
        return (
            f"per-user holdout (MLlib, validation only): {self.n_eval:,} of {self.n_eligible:,} "
            f"users with enough tracks hold out {self.per_user} pairs each; no test fold"
        )

    def sizes(self) -> dict[str, int]:
        """ml.split.Split.sizes' keys (ml.model_runs.metrics.split), and the eligible users."""
        return {
            "time_split": 0,
            "train_interactions": self.n_train,
            "valid_interactions": self.n_test,
            "test_interactions": 0,
            "valid_users": self.n_eval,
            "test_users": 0,
            "eligible_users": self.n_eligible,
        }

    def unpersist(self) -> None:
        for frame in (self.train, self.test, self.eval_users):
            frame.unpersist()


def _draw(seed: int, purpose: str, *columns: str) -> F.Column:
    return F.xxhash64(F.lit(seed), F.lit(purpose), *columns)


def leave_k_out(listens: DataFrame, settings: Evaluation, seed: int | None = None) -> SparkHoldout:
    """The holdout of `listens` (user_id, track_id, listen_count); `seed` defaults to the
    config's evaluation.seed."""
    seed = settings.seed if seed is None else seed
    per_user = listens.groupBy("user_id").agg(F.count("*").alias("n"))
    eligible = per_user.where(F.col("n") >= settings.min_user_tracks).select("user_id")
    n_eligible = eligible.count()
    if n_eligible < settings.min_eval_users:
        raise NotEnoughData(
            f"only {n_eligible} users have >= {settings.min_user_tracks} distinct tracks; "
            f"evaluation needs at least {settings.min_eval_users}"
        )
    chosen = eligible
    if n_eligible > settings.max_eval_users:
        chosen = eligible.orderBy(_draw(seed, "users", "user_id"), "user_id").limit(
            settings.max_eval_users
        )
    chosen = chosen.persist()
    by_draw = Window.partitionBy("user_id").orderBy(
        _draw(seed, "pairs", "user_id", "track_id"), "track_id"
    )
    test = (
        listens.join(chosen, "user_id", "left_semi")
        .withColumn("draw", F.row_number().over(by_draw))
        .where(F.col("draw") <= settings.holdout_per_user)
        .select("user_id", "track_id")
        .persist()
    )
    train = listens.join(test, ["user_id", "track_id"], "left_anti").persist()
    return SparkHoldout(
        train=train,
        test=test,
        eval_users=chosen,
        n_eval=chosen.count(),
        n_eligible=n_eligible,
        n_train=train.count(),
        n_test=test.count(),
        per_user=settings.holdout_per_user,
    )

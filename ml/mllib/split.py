"""The per-user holdout in Spark, by ml.evaluate.leave_k_out's rule. "Random" is a seeded hash
(xxhash64 of the seed and the ids): the same data and seed give the same split however Spark
partitions it; the same rule as the driver's, not the same draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from ml.config import Evaluation
from ml.evaluate import NotEnoughData

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class SparkHoldout:
    train: DataFrame  # user_id, track_id, listen_count: the held-out pairs removed
    test: DataFrame  # user_id, track_id: the held-out pairs
    eval_users: DataFrame  # user_id: the users evaluated
    n_eval: int
    n_eligible: int
    n_train: int
    n_test: int

    def sizes(self) -> dict[str, int]:
        """The same keys as ml.evaluate.Holdout.sizes (ml.model_runs.metrics.holdout)."""
        return {
            "eval_users": self.n_eval,
            "eligible_users": self.n_eligible,
            "train_interactions": self.n_train,
            "test_interactions": self.n_test,
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
    )

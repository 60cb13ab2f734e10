"""ml.evaluate's ranking metrics and `next_hit`, computed in Spark on the holdout's users: the
same definitions (ml/README.md, ml.quality.per_user_ranking_metrics). The per-user values are
collected (one row per evaluated user, at most `evaluation.max_eval_users`) in user_id order,
so every candidate's and baseline's arrays are aligned and ml.selection.decide bootstraps
their paired differences as on the driver.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from pyspark.sql import Window
from pyspark.sql import functions as F

from ml.quality import ACCURACY

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ml.mllib.split import SparkHoldout


def ranking_metrics(
    lists: DataFrame, holdout: SparkHoldout, k: int, n_catalog_tracks: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Means and per-user values (ACCURACY; users in user_id order, as holdout.eval_users)
    at k of `lists` (user_id, rank, track_id; ranks 1..k) of the evaluated users, and the
    lists' catalog coverage."""
    spark = lists.sparkSession
    lists = lists.where(F.col("rank") <= k).join(holdout.eval_users, "user_id", "left_semi")
    lists = lists.persist()  # two actions below: rank the users once
    try:
        per_user = _per_user(spark, lists, holdout, k)
        covered = lists.select("track_id").distinct().count()
    finally:
        lists.unpersist()
    means = {name: float(values.mean()) for name, values in per_user.items()}
    return {**means, "coverage": float(covered / max(n_catalog_tracks, 1))}, per_user


def _per_user(
    spark: SparkSession, lists: DataFrame, holdout: SparkHoldout, k: int
) -> dict[str, np.ndarray]:
    relevant = holdout.test.groupBy("user_id").agg(F.count("*").alias("relevant"))
    hits = (
        lists.join(holdout.test, ["user_id", "track_id"])
        .withColumn(
            "hits_so_far",
            F.row_number().over(Window.partitionBy("user_id").orderBy("rank")),
        )
        .groupBy("user_id")
        .agg(
            F.count("*").alias("hits"),
            F.sum(F.col("hits_so_far") / F.col("rank")).alias("precision_sum"),
            F.sum(F.lit(1.0) / F.log2(F.col("rank") + F.lit(1))).alias("dcg"),
        )
    )
    ideal_dcg = spark.createDataFrame(
        [(n, sum(1.0 / math.log2(r + 1) for r in range(1, n + 1))) for n in range(1, k + 1)],
        "ideal int, ideal_dcg double",
    )
    table = (
        holdout.eval_users.join(relevant, "user_id")
        .join(hits, "user_id", "left")
        .fillna(0, ["hits", "precision_sum", "dcg"])
        .withColumn("ideal", F.least(F.lit(k), F.col("relevant")).cast("int"))
        .join(F.broadcast(ideal_dcg), "ideal")
        .select(
            "user_id",
            (F.col("hits") / F.lit(float(k))).alias("precision"),
            (F.col("hits") / F.col("relevant")).alias("recall"),
            (F.col("precision_sum") / F.col("ideal")).alias("map"),
            (F.col("dcg") / F.col("ideal_dcg")).alias("ndcg"),
        )
        .orderBy("user_id")
        .toArrow()
    )
    if table.num_rows != holdout.n_eval:
        raise ValueError("every evaluated user needs at least one held-out track")
    return {name: table[name].to_numpy().astype(np.float64) for name in ACCURACY}


def next_hit(similar: DataFrame, holdout: SparkHoldout, k: int) -> float:
    """ml.evaluate's `next_hit`@k of the "play next" lists `similar` (track_id, rank,
    similar_track_id) on the holdout: for each evaluated user, the share of their training
    tracks whose list holds one of their held-out tracks; averaged over the users."""
    seeds = holdout.train.join(holdout.eval_users, "user_id", "left_semi").select(
        "user_id", F.col("track_id").alias("seed")
    )
    lists = similar.where(F.col("rank") <= k).select(
        F.col("track_id").alias("seed"), F.col("similar_track_id").alias("track_id")
    )
    hit_seeds = (
        seeds.join(lists, "seed")
        .join(holdout.test, ["user_id", "track_id"], "left_semi")
        .select("user_id", "seed")
        .distinct()
        .groupBy("user_id")
        .agg(F.count("*").alias("hit_seeds"))
    )
    row = (
        seeds.groupBy("user_id")
        .agg(F.count("*").alias("seeds"))
        .join(hit_seeds, "user_id", "left")
        .fillna(0, ["hit_seeds"])
        .agg(F.avg(F.col("hit_seeds") / F.col("seeds")).alias("next_hit"), F.count("*").alias("n"))
        .first()
    )
    assert row is not None
    if row["n"] != holdout.n_eval:
        raise ValueError("every evaluated user needs at least one training track")
    return float(row["next_hit"])

"""ml.evaluate's ranking metrics and `next_hit`, computed in Spark on the holdout's users: the
same definitions (ml/README.md), so the dicts compare and ml.selection decides alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ml.mllib.split import SparkHoldout


def ranking_metrics(
    lists: DataFrame, holdout: SparkHoldout, k: int, n_catalog_tracks: int
) -> dict[str, float]:
    """Metrics at k of `lists` (user_id, rank, track_id; ranks 1..k) of the evaluated users."""
    spark = lists.sparkSession
    lists = lists.where(F.col("rank") <= k).join(holdout.eval_users, "user_id", "left_semi")
    lists = lists.persist()  # two actions below: rank the users once
    try:
        return _metrics(spark, lists, holdout, k, n_catalog_tracks)
    finally:
        lists.unpersist()


def _metrics(
    spark: SparkSession, lists: DataFrame, holdout: SparkHoldout, k: int, n_catalog_tracks: int
) -> dict[str, float]:
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
    per_user = (
        holdout.eval_users.join(relevant, "user_id")
        .join(hits, "user_id", "left")
        .fillna(0, ["hits", "precision_sum", "dcg"])
        .withColumn("ideal", F.least(F.lit(k), F.col("relevant")).cast("int"))
        .join(F.broadcast(ideal_dcg), "ideal")
    )
    row = per_user.agg(
        F.avg(F.col("hits") / F.lit(float(k))).alias("precision"),
        F.avg(F.col("hits") / F.col("relevant")).alias("recall"),
        F.avg(F.col("precision_sum") / F.col("ideal")).alias("map"),
        F.avg(F.col("dcg") / F.col("ideal_dcg")).alias("ndcg"),
        F.count("*").alias("users"),
    ).first()
    assert row is not None
    if row["users"] != holdout.n_eval:
        raise ValueError("every evaluated user needs at least one held-out track")
    covered = lists.select("track_id").distinct().count()
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "map": float(row["map"]),
        "ndcg": float(row["ndcg"]),
        "coverage": float(covered / max(n_catalog_tracks, 1)),
    }


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

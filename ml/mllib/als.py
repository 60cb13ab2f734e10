"""MLlib's implicit ALS with the config's [model] parameters, and top-k lists from its factors.

ml/README.md ("On Spark (MLlib)") maps each parameter: the rating is the weight w of
ml.families.factors.confidence minus 1/alpha (floored at MIN_RATING), so that MLlib's
1 + alpha * rating equals implicit's alpha * w; regParam is scaled for MLlib's per-pair (ALS-WR)
penalty. MLlib takes 32-bit ids (checked: SparkMarts.int_ids) and checkpoints into the
session's checkpoint dir.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Window
from pyspark.sql import functions as F

from ml.params import ModelParams

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MIN_RATING = 1e-6
HEAVY_QUANTILE = 0.99  # as ml.topk: most users need k + this quantile of heard tracks
SIMILAR_BATCH = 1024  # tracks scored against the whole catalog at a time (blockwise)


@dataclass
class MllibFit:
    params: ModelParams
    model: ALSModel
    fit_seconds: float


def weights(counts: DataFrame, params: ModelParams, n_tracks: int) -> F.Column:
    """The column w of ml.families.factors.confidence for `counts` (user_id, track_id, listen_count,
    plus n_user and track_sum for bm25, see `with_bm25_terms`)."""
    count = F.col("listen_count").cast("double")
    if params.confidence == "log":
        return F.log1p(count)
    if params.confidence == "raw":
        return count
    k1, b = params.bm25_k1, params.bm25_b
    idf = F.lit(math.log(n_tracks)) - F.log1p(F.col("n_user").cast("double"))
    length_norm = F.lit(1.0 - b) + F.lit(b) * F.col("track_sum") / F.col("average_length")
    return count * F.lit(k1 + 1.0) / (F.lit(k1) * length_norm + count) * idf


def ratings(counts: DataFrame, params: ModelParams, n_tracks: int) -> DataFrame:
    """(user, item, rating) for MLlib: see the module docstring."""
    if params.confidence == "bm25":
        per_user = counts.groupBy("user_id").agg(F.count("*").alias("n_user"))
        per_track = counts.groupBy("track_id").agg(F.sum("listen_count").alias("track_sum"))
        total = counts.agg(F.sum("listen_count").alias("total"))
        average = total.select((F.col("total") / F.lit(n_tracks)).alias("average_length"))
        counts = counts.join(per_user, "user_id").join(per_track, "track_id").crossJoin(average)
    rating = weights(counts, params, n_tracks) - F.lit(1.0 / params.alpha)
    return counts.select(
        F.col("user_id").cast("int").alias("user"),
        F.col("track_id").cast("int").alias("item"),
        F.greatest(rating, F.lit(MIN_RATING)).cast("float").alias("rating"),
    )


def reg_param(params: ModelParams, n_users: int, n_tracks: int, n_pairs: int) -> float:
    return params.regularization * (n_users + n_tracks) / (2.0 * max(n_pairs, 1))


def fit(
    counts: DataFrame,
    params: ModelParams,
    *,
    n_users: int,
    n_tracks: int,
    n_pairs: int,
    blocks: int = 0,
) -> MllibFit:
    """MLlib ALS fit on `counts` (user_id, track_id, listen_count); sizes are the matrix's."""
    started = time.perf_counter()
    als = ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=reg_param(params, n_users, n_tracks, n_pairs),
        alpha=params.alpha,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        coldStartStrategy="drop",
        seed=params.random_state,
    )
    if blocks:
        als = als.setNumUserBlocks(blocks).setNumItemBlocks(blocks)
    model = als.fit(ratings(counts, params, n_tracks))
    model.itemFactors.count()  # the fit is lazy in part: finish it inside the timing
    return MllibFit(params, model, time.perf_counter() - started)


def top_k_unheard(
    model: ALSModel, users: DataFrame, heard: DataFrame, k: int, n_tracks: int
) -> DataFrame:
    """Each user's k best-scored tracks not in `heard` (user_id, track_id): (user_id, rank,
    track_id, score). MLlib's recommendForUserSubset (blockwise, top-k per block) is asked for
    k + (heard tracks) candidates, in two tiers like ml.topk: k + the 99th percentile of heard
    for most users, k + the maximum for the heaviest 1%; then the heard ones are dropped."""
    heard = heard.select("user_id", "track_id").join(users, "user_id", "left_semi")
    per_user = users.select("user_id").join(
        heard.groupBy("user_id").agg(F.count("*").alias("heard")), "user_id", "left"
    )
    per_user = per_user.fillna(0, ["heard"]).persist()
    stats = per_user.agg(
        F.percentile_approx("heard", HEAVY_QUANTILE).alias("spare"), F.max("heard").alias("top")
    ).first()
    assert stats is not None
    spare, top = int(stats["spare"] or 0), int(stats["top"] or 0)
    parts = []
    for condition, wide in (
        (F.col("heard") <= spare, k + spare),
        (F.col("heard") > spare, k + top),
    ):
        subset = per_user.where(condition).select(F.col("user_id").cast("int").alias("user"))
        recs = model.recommendForUserSubset(subset, min(wide, n_tracks))
        parts.append(
            recs.select("user", F.explode("recommendations").alias("r")).select(
                F.col("user").cast("bigint").alias("user_id"),
                F.col("r.item").cast("bigint").alias("track_id"),
                F.col("r.rating").cast("double").alias("score"),
            )
        )
    candidates = parts[0].unionByName(parts[1]).join(heard, ["user_id", "track_id"], "left_anti")
    order = Window.partitionBy("user_id").orderBy(F.desc("score"), "track_id")
    out = (
        candidates.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= k)
        .select("user_id", F.col("rank").cast("int"), "track_id", "score")
    )
    per_user.unpersist()
    return out


def item_factors(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """(track ids sorted, factors float32 rows aligned): catalog-sized (tracks x rank)."""
    table = model.itemFactors.orderBy("id").toArrow()
    ids = table["id"].to_numpy().astype(np.int64)
    values = table["features"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, values.astype(np.float32).reshape(len(ids), -1)


def blockwise_top_k(
    spark: SparkSession,
    ids: np.ndarray,
    query: np.ndarray,
    keys: np.ndarray,
    k: int,
    partitions: int = 0,
    key_ids: np.ndarray | None = None,
) -> DataFrame:
    """For each row i: the k rows j != i with the highest query[i] . keys[j], as (track_id,
    rank, similar_track_id, score); with `key_ids`, keys are other tracks (ids of keys' rows,
    none of them a query's own). Spark tasks each score SIMILAR_BATCH tracks at a time
    against all of them with numpy, so no pair is ever a row; the matrices travel with the
    task (catalog x factors floats must fit an executor)."""
    own = key_ids is None
    targets = ids if key_ids is None else key_ids
    k = min(k, len(targets) - 1 if own else len(targets))
    schema = "track_id bigint, rank int, similar_track_id bigint, score double"
    if k <= 0 or len(ids) == 0:
        return spark.createDataFrame([], schema)
    frame = spark.range(len(ids)).withColumnRenamed("id", "row")
    if partitions:
        frame = frame.repartition(partitions)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = batch.column("row").to_numpy()
            for start in range(0, len(rows), SIMILAR_BATCH):
                part = rows[start : start + SIMILAR_BATCH]
                scores = query[part] @ keys.T
                if own:
                    scores[np.arange(len(part)), part] = -np.inf
                best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(scores, best, 1)
                order = np.lexsort((best, -best_scores), axis=1)
                best = np.take_along_axis(best, order, 1)
                yield pa.RecordBatch.from_pydict(
                    {
                        "track_id": np.repeat(ids[part], k),
                        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(part)),
                        "similar_track_id": targets[best].ravel(),
                        "score": np.take_along_axis(scores, best, 1).ravel().astype(np.float64),
                    }
                )

    return frame.mapInArrow(score, schema)

"""ml.baselines' popularity and genre popularity (and fallbacks), in Spark.

Ties go to the lower track id (ml.baselines' lower column). A user who heard h tracks needs at
most the first k + h of a ranking, so each user is joined with just those positions (an
equi-join, no cross join); a genre's ranking is a subsequence of the global one, so merging
the two gives ml.baselines' order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def listeners(counts: DataFrame, tracks: DataFrame) -> DataFrame:
    """(track_id, listeners) for every track of `tracks`, counted on `counts`' pairs."""
    counted = counts.groupBy("track_id").agg(F.count("*").alias("listeners"))
    return tracks.select("track_id").join(counted, "track_id", "left").fillna(0, ["listeners"])


def popularity_top_k(
    counts: DataFrame,
    tracks: DataFrame,
    track_genres: DataFrame,
    users: DataFrame,
    heard: DataFrame | None,
    k: int,
    n_users: int,
) -> DataFrame:
    """Each user's top-k by popularity counted on `counts`; by genre for users whose `genre`
    (users: user_id, genre) is set. Returns (user_id, rank, track_id, score, from_genre);
    score is the share of the matrix's `n_users` who listened (ml.baselines' score)."""
    popular = listeners(counts, tracks)
    by_popularity = [F.desc("listeners"), F.asc("track_id")]
    by_rank = Window.orderBy(*by_popularity)  # one partition: catalog-sized
    global_rank = popular.withColumn("position", F.row_number().over(by_rank))
    genre_rank = (
        track_genres.join(popular, "track_id")
        .withColumn(
            "position",
            F.row_number().over(Window.partitionBy("genre").orderBy(*by_popularity)),
        )
        .select("genre", "position", "track_id")
    )
    wanted = users.select("user_id", "genre")
    if heard is not None:
        heard = heard.select("user_id", "track_id").join(wanted, "user_id", "left_semi")
        per_user = heard.groupBy("user_id").agg(F.count("*").alias("heard"))
        wanted = wanted.join(per_user, "user_id", "left").fillna(0, ["heard"])
    else:
        wanted = wanted.withColumn("heard", F.lit(0))
    wanted = wanted.withColumn(
        "position", F.explode(F.sequence(F.lit(1), F.lit(k) + F.col("heard")))
    )
    from_global = wanted.join(global_rank.select("position", "track_id"), "position").select(
        "user_id", "track_id", F.lit(False).alias("from_genre")
    )
    from_genre = (
        wanted.where(F.col("genre").isNotNull())
        .join(genre_rank, ["genre", "position"])
        .select("user_id", "track_id", F.lit(True).alias("from_genre"))
    )
    candidates = (
        from_global.unionByName(from_genre)
        .groupBy("user_id", "track_id")
        .agg(F.max("from_genre").alias("from_genre"))
    )
    if heard is not None:
        candidates = candidates.join(heard, ["user_id", "track_id"], "left_anti")
    order = Window.partitionBy("user_id").orderBy(F.desc("from_genre"), *by_popularity)
    return (
        candidates.join(popular, "track_id")
        .withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= k)
        .select(
            "user_id",
            F.col("rank").cast("int"),
            "track_id",
            (F.col("listeners") / F.lit(float(max(n_users, 1)))).alias("score"),
            "from_genre",
        )
    )

"""The published lists (ml/lists.py's rules) as Spark DataFrames, written to the lake in
ml/lake_lists.py's layout and streamed back as bounded Arrow batches for the Postgres COPY.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyspark.sql import functions as F

from ml.baselines import GENRE_POPULARITY, POPULARITY
from ml.lake_lists import RUN_PREFIX
from ml.lists import MODEL
from ml.mllib.als import blockwise_top_k, item_factors, top_k_unheard
from ml.mllib.popularity import listeners, popularity_top_k
from ml.publish import SCHEMA, SIMILAR_TRACKS, USER_TOP_TRACKS

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame

    from ml.mllib.data import SparkMarts

USER_COLUMNS, SIMILAR_COLUMNS = USER_TOP_TRACKS.names, SIMILAR_TRACKS.names


@dataclass(frozen=True)
class SparkLists:
    user_top_tracks: DataFrame  # USER_COLUMNS but the last two
    similar_tracks: DataFrame  # SIMILAR_COLUMNS but the last two


def _fallback_source() -> F.Column:
    return F.when(F.col("from_genre"), F.lit(GENRE_POPULARITY)).otherwise(F.lit(POPULARITY))


def user_top_tracks(
    marts: SparkMarts, k: int, model: ALSModel | None, baseline: str = GENRE_POPULARITY
) -> DataFrame:
    """Every dim_users user's list; `model` None publishes `baseline` for users with listens."""
    k = min(k, marts.n_tracks)
    tracks = marts.listens.select("track_id").distinct()
    listened = marts.users.join(marts.listens, "user_id", "left_semi")
    silent = marts.users.join(marts.listens, "user_id", "left_anti")
    if model is not None:
        heard_lists = top_k_unheard(model, listened, marts.listens, k, marts.n_tracks).withColumn(
            "source", F.lit(MODEL)
        )
    else:
        users = listened
        if baseline != GENRE_POPULARITY:
            users = users.withColumn("genre", F.lit(None).cast("string"))
        heard_lists = popularity_top_k(
            marts.listens, tracks, marts.track_genres, users, marts.listens, k, marts.n_users
        ).withColumn("source", _fallback_source())
    fallback = popularity_top_k(
        marts.listens, tracks, marts.track_genres, silent, None, k, marts.n_users
    ).withColumn("source", _fallback_source())
    columns = ["user_id", "rank", "track_id", "score", "source"]
    return heard_lists.select(*columns).unionByName(fallback.select(*columns))


def similar_tracks(
    marts: SparkMarts, k: int, model: ALSModel | None, scoring: str = "dot"
) -> DataFrame:
    """Every listened track's "play next" list (see the module docstring)."""
    if model is not None:
        return model_similar(model, k, scoring)
    return popularity_similar(marts, marts.listens, k, by_genre=True)


def model_similar(model: ALSModel, k: int, scoring: str = "dot") -> DataFrame:
    """The k nearest tracks of every track of `model` by its item factors (ml.model.similar)."""
    ids, factors = item_factors(model)
    if scoring == "cosine":
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        factors = factors / np.maximum(norms, np.finfo(np.float32).tiny)
    return blockwise_top_k(model.itemFactors.sparkSession, ids, factors, factors, k)


def popularity_similar(
    marts: SparkMarts, counts: DataFrame, k: int, *, by_genre: bool
) -> DataFrame:
    """ml.baselines' "play next" lists, popularity counted on `counts`: the most popular
    other tracks, or (`by_genre`) those sharing most of the track's genres first
    (Popularity.similar_by_genre). Ranked as (n + 1) x shared genres + the popularity rank
    score; the score is the share of users who listened."""
    spark = counts.sparkSession
    tracks = marts.listens.select("track_id").distinct()
    popular = listeners(counts, tracks).orderBy("track_id").toArrow()
    ids = popular["track_id"].to_numpy()
    count = popular["listeners"].to_numpy()
    n = len(ids)
    rank_score = np.empty(n)
    rank_score[np.lexsort((np.arange(n), -count))] = np.arange(n, 0, -1)
    genres = np.zeros((n, 0))
    if by_genre:
        pairs = marts.track_genres.toArrow()
        code = {name: i for i, name in enumerate(sorted(set(pairs["genre"].to_pylist())))}
        genres = np.zeros((n, len(code)))
        rows = np.searchsorted(ids, pairs["track_id"].to_numpy())
        cols = np.array([code[name] for name in pairs["genre"].to_pylist()], dtype=np.int64)
        genres[rows, cols] = 1.0
    query = np.hstack([genres * float(n + 1), np.ones((n, 1))])
    keys = np.hstack([genres, rank_score[:, None]])
    share = spark.createDataFrame(
        pa.table({"similar_track_id": ids, "share": count / max(marts.n_users, 1)})
    )
    ranked = blockwise_top_k(spark, ids, query, keys, k)
    return ranked.join(share, "similar_track_id").select(
        "track_id", "rank", "similar_track_id", F.col("share").alias("score")
    )


def build_lists(
    marts: SparkMarts,
    model: ALSModel | None,
    *,
    k: int,
    similar_k: int,
    scoring: str = "dot",
    baseline: str = GENRE_POPULARITY,
) -> SparkLists:
    return SparkLists(
        user_top_tracks(marts, k, model, baseline),
        similar_tracks(marts, similar_k, model, scoring),
    )


def write_lists(
    lists: SparkLists, lake: str, run_id: str, model_run_id: str, generated_at: datetime
) -> dict[str, int]:
    """Both lists as Parquet under `<lake>/recommendations/<table>/run_id=<run_id>/` (the
    columns of ml/lake_lists.py, timestamps as microseconds in UTC); rows per table."""
    spark = lists.user_top_tracks.sparkSession
    stamp = {
        "model_run_id": F.lit(model_run_id),
        "generated_at": F.lit(generated_at).cast("timestamp"),
    }
    frames = {
        "user_top_tracks": lists.user_top_tracks.withColumns(stamp).select(*USER_COLUMNS),
        "similar_tracks": lists.similar_tracks.withColumns(stamp).select(*SIMILAR_COLUMNS),
    }
    conf = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(conf)
    spark.conf.set(conf, "TIMESTAMP_MICROS")  # as pyarrow writes them, not legacy INT96
    try:
        for name, frame in frames.items():
            frame.write.mode("overwrite").parquet(_folder(lake, name, run_id))
    finally:
        spark.conf.set(conf, before)
    return {name: lake_rows(lake, name, run_id) for name in frames}


def _folder(lake: str, table: str, run_id: str) -> str:
    return f"{lake.rstrip('/')}/{SCHEMA}/{table}/{RUN_PREFIX}{run_id}"


def _dataset(lake: str, table: str, run_id: str) -> ds.Dataset:
    fs, base = pafs.FileSystem.from_uri(_folder(lake, table, run_id))
    return ds.dataset(base, filesystem=fs, format="parquet")


def lake_rows(lake: str, table: str, run_id: str) -> int:
    return int(_dataset(lake, table, run_id).count_rows())


def lake_batches(
    lake: str, table: str, run_id: str, batch_rows: int = 100_000
) -> Iterator[pa.RecordBatch]:
    """The run's written list `table`, in Arrow record batches of at most `batch_rows` rows:
    what the Postgres copy is loaded from, chunk by chunk (the same rows as the lake's)."""
    yield from _dataset(lake, table, run_id).to_batches(batch_size=batch_rows)

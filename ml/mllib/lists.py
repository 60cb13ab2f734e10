"""The published lists as Spark DataFrames, written to the lake in ml/lake_lists.py's layout
and streamed back as bounded Arrow batches for the Postgres COPY. ml/lists.py's core rules (k
unheard tracks for every dim_users user, source `model` or the named fallback) without its
cold-start blend and new-track slots; "play next" is the ALS item factors' neighbours of every
track with listens (ml.play_next's sequence models are the driver path's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    from pyspark.sql import DataFrame, SparkSession

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
    """Every dim_tracks track's "play next" list: the model's item-factor neighbours (no
    model: the genre popularity lists) for tracks with listens, genre popularity for the
    tracks nobody has played yet."""
    heard = (
        model_similar(model, k, scoring)
        if model is not None
        else popularity_similar(marts, marts.listens, k, by_genre=True)
    )
    return heard.unionByName(unheard_similar(marts, k))


def model_similar(model: ALSModel, k: int, scoring: str = "dot") -> DataFrame:
    """The k nearest tracks of every track of `model` by its item factors (FactorModel.similar)."""
    ids, factors = item_factors(model)
    if scoring == "cosine":
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        factors = factors / np.maximum(norms, np.finfo(np.float32).tiny)
    return blockwise_top_k(model.itemFactors.sparkSession, ids, factors, factors, k)


@dataclass(frozen=True)
class _Ranking:
    """The tracks with listens (sorted ids), their listeners on some counts, and the
    popularity rank as a score (n for the most popular, ties to the lower id)."""

    ids: np.ndarray
    listeners: np.ndarray
    rank_score: np.ndarray


def _ranking(marts: SparkMarts, counts: DataFrame) -> _Ranking:
    tracks = marts.listens.select("track_id").distinct()
    popular = listeners(counts, tracks).orderBy("track_id").toArrow()
    ids = popular["track_id"].to_numpy()
    count = popular["listeners"].to_numpy()
    n = len(ids)
    rank_score = np.empty(n)
    rank_score[np.lexsort((np.arange(n), -count))] = np.arange(n, 0, -1)
    return _Ranking(ids, count, rank_score)


def _genre_rows(ids: np.ndarray, pairs: pa.Table, names: list[str]) -> np.ndarray:
    """(len(ids), len(names)) with 1 where track ids[i] has genre names[j] (pairs: track_id,
    genre; null genres and tracks outside `ids` ignored)."""
    genres = np.zeros((len(ids), len(names)))
    known = pa.array(names, type=pairs["genre"].type)
    codes = pc.fill_null(pc.index_in(pairs["genre"], value_set=known), -1).to_numpy()
    tracks = pairs["track_id"].to_numpy()
    keep = (codes >= 0) & np.isin(tracks, ids)
    genres[np.searchsorted(ids, tracks[keep]), codes[keep]] = 1.0
    return genres


def _genre_names(*pairs: pa.Table) -> list[str]:
    return sorted({name for p in pairs for name in p["genre"].unique().drop_null().to_pylist()})


def _shares(spark: SparkSession, marts: SparkMarts, ranking: _Ranking) -> DataFrame:
    share = ranking.listeners / max(marts.n_users, 1)
    return spark.createDataFrame(pa.table({"similar_track_id": ranking.ids, "share": share}))


def popularity_similar(
    marts: SparkMarts, counts: DataFrame, k: int, *, by_genre: bool
) -> DataFrame:
    """ml.baselines' "play next" lists of the tracks with listens, popularity counted on
    `counts`: the most popular other tracks, or (`by_genre`) those sharing most of the
    track's genres first (Popularity.similar_by_genre). Ranked as (n + 1) x shared genres +
    the popularity rank score; the score is the share of users who listened."""
    spark = counts.sparkSession
    ranking = _ranking(marts, counts)
    n = len(ranking.ids)
    genres = np.zeros((n, 0))
    if by_genre:
        pairs = marts.track_genres.toArrow()
        genres = _genre_rows(ranking.ids, pairs, _genre_names(pairs))
    query = np.hstack([genres * float(n + 1), np.ones((n, 1))])
    keys = np.hstack([genres, ranking.rank_score[:, None]])
    ranked = blockwise_top_k(spark, ranking.ids, query, keys, k)
    return ranked.join(_shares(spark, marts, ranking), "similar_track_id").select(
        "track_id", "rank", "similar_track_id", F.col("share").alias("score")
    )


def unheard_similar(marts: SparkMarts, k: int) -> DataFrame:
    """The "play next" of the catalog tracks nobody has played: tracks with listens sharing
    most of their genres, then the most popular (popularity_similar's genre ranking, counted
    on all listens)."""
    spark = marts.listens.sparkSession
    unheard = marts.unheard.toArrow()  # catalog-sized: the tracks without listens
    cold = np.unique(unheard["track_id"].to_numpy())
    ranking = _ranking(marts, marts.listens)
    pairs = marts.track_genres.toArrow()
    names = _genre_names(pairs, unheard)
    n = len(ranking.ids)
    query = np.hstack([_genre_rows(cold, unheard, names) * float(n + 1), np.ones((len(cold), 1))])
    keys = np.hstack([_genre_rows(ranking.ids, pairs, names), ranking.rank_score[:, None]])
    ranked = blockwise_top_k(spark, cold, query, keys, k, key_ids=ranking.ids)
    return ranked.join(_shares(spark, marts, ranking), "similar_track_id").select(
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

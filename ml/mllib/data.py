"""The Spark engine's marts: as DataFrames for training in Spark (`read_marts`), or collected
to the driver as Arrow into what the Postgres path reads (`collect_marts`: Interactions with
first-listen times, Catalog, Sequences, TrackFeatures), so that training below
`[spark] mllib_above_pairs` does not know the engine.

`listens` is fct_listens as (user_id, track_id, listen_count) pairs with counts > 0, a pair
listed twice summed (as ml.interactions.build_interactions does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from ml.config import MlConfig
from ml.interactions import (
    Catalog,
    Interactions,
    MartsNotReady,
    build_interactions,
    catalog_from_frames,
)
from ml.sequences import Sequences, TrackFeatures, build_sequences, track_features
from moovitamix.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
INPUT_MARTS = ("fct_listens", "dim_users", "dim_tracks", "bridge_track_genres")


@dataclass(frozen=True)
class SparkMarts:
    listens: DataFrame  # user_id bigint, track_id bigint, listen_count bigint (> 0, unique)
    users: DataFrame  # every dim_users user: user_id bigint, genre string (favorite; null)
    track_genres: DataFrame  # track_id bigint, genre string: distinct, tracks with listens
    unheard: DataFrame  # track_id bigint, genre string (null: none): dim_tracks without listens
    n_users: int  # users with listens (the matrix's rows)
    n_tracks: int  # tracks with listens (the matrix's columns)
    n_pairs: int
    n_catalog_tracks: int  # rows of dim_tracks: the coverage denominator
    int_ids: bool  # every user_id and track_id fits MLlib's int ids

    def unpersist(self) -> None:
        """Drop the cached DataFrames (when the run is done with them)."""
        self.listens.unpersist()
        self.track_genres.unpersist()


def check_marts(spark: SparkSession, schema: str) -> None:
    missing = [t for t in INPUT_MARTS if not spark.catalog.tableExists(f"{schema}.{t}")]
    if missing:
        raise MartsNotReady(
            f"input mart(s) missing: {', '.join(f'{schema}.{m}' for m in missing)} "
            "(run the transform step first)"
        )


def listens_of(spark: SparkSession, schema: str) -> DataFrame:
    return spark.sql(
        "select cast(user_id as bigint) as user_id, cast(track_id as bigint) as track_id, "
        f"sum(cast(listen_count as bigint)) as listen_count from {schema}.fct_listens "
        "where listen_count > 0 group by 1, 2"
    )


def users_of(spark: SparkSession, schema: str) -> DataFrame:
    return spark.sql(
        "select cast(user_id as bigint) as user_id, cast(favorite_genre_id as string) as genre "
        f"from {schema}.dim_users"
    )


def track_genres_of(spark: SparkSession, schema: str) -> DataFrame:
    return spark.sql(
        "select distinct cast(track_id as bigint) as track_id, "
        f"cast(genre_id as string) as genre from {schema}.bridge_track_genres "
        "where genre_id is not null"
    )


def use_mllib(spark: SparkSession, schema: str, config: MlConfig) -> bool:
    """Train in Spark (MLlib) rather than in the driver (implicit): more (user, track) pairs
    than `[spark] mllib_above_pairs` (ml/config.toml says why its default)."""
    check_marts(spark, schema)
    # (user_id, track_id) is the mart's primary key (tested by dbt): a plain count, no shuffle
    rows = spark.sql(f"select count(*) as n from {schema}.fct_listens where listen_count > 0")
    return int(rows.first()["n"]) > config.spark.mllib_above_pairs


def read_marts(spark: SparkSession, schema: str) -> SparkMarts:
    """<schema>'s input marts as DataFrames; the listens cached (every step reads them)."""
    check_marts(spark, schema)
    listens = listens_of(spark, schema).persist()
    sizes = listens.selectExpr(
        "count(*) as pairs",
        "count(distinct user_id) as users",
        "count(distinct track_id) as tracks",
        "min(user_id) as min_user",
        "max(user_id) as max_user",
        "min(track_id) as min_track",
        "max(track_id) as max_track",
    ).first()
    assert sizes is not None
    if sizes["pairs"] == 0:
        listens.unpersist()
        raise MartsNotReady(f"{schema}.fct_listens has no listens: nothing to train on")
    users = users_of(spark, schema)
    tracks = listens.select("track_id").distinct()
    track_genres = track_genres_of(spark, schema).join(tracks, "track_id", "left_semi").persist()
    n_catalog = spark.table(f"{schema}.dim_tracks").count()
    unheard = (
        spark.sql(f"select distinct cast(track_id as bigint) as track_id from {schema}.dim_tracks")
        .join(tracks, "track_id", "left_anti")
        .join(track_genres_of(spark, schema), "track_id", "left")
    )
    return SparkMarts(
        listens=listens,
        users=users,
        track_genres=track_genres,
        unheard=unheard,
        n_users=int(sizes["users"]),
        n_tracks=int(sizes["tracks"]),
        n_pairs=int(sizes["pairs"]),
        n_catalog_tracks=int(n_catalog),
        int_ids=all(
            INT_MIN <= int(sizes[f"{end}_{what}"]) <= INT_MAX
            for end in ("min", "max")
            for what in ("user", "track")
        ),
    )


def timed_listens_of(spark: SparkSession, schema: str) -> DataFrame:
    """listens_of with each pair's first listen (`first_seen`, epoch seconds; 0 when unknown,
    as ml.interactions reads it), or without it when fct_listens has no first_seen_at."""
    if "first_seen_at" not in spark.table(f"{schema}.fct_listens").columns:
        return listens_of(spark, schema)
    return spark.sql(
        "select cast(user_id as bigint) as user_id, cast(track_id as bigint) as track_id, "
        "sum(cast(listen_count as bigint)) as listen_count, "
        "coalesce(min(cast(first_seen_at as bigint)), 0) as first_seen "
        f"from {schema}.fct_listens where listen_count > 0 group by 1, 2"
    )


def sequences_of(spark: SparkSession, schema: str) -> DataFrame:
    """Every listen of fct_listens (its positions and listened_at exploded together): user_id,
    position, track_id, listened_at (epoch seconds, 0 when unknown), as ml.sequences reads."""
    columns = spark.table(f"{schema}.fct_listens").columns
    missing = [c for c in ("positions", "listened_at") if c not in columns]
    if missing:
        raise MartsNotReady(
            f"{schema}.fct_listens has no {' or '.join(missing)} (rebuild the marts: dbt build)"
        )
    return spark.sql(
        "select cast(user_id as bigint) as user_id, cast(listen.positions as int) as position, "
        "cast(track_id as bigint) as track_id, "
        "coalesce(cast(listen.listened_at as bigint), 0) as listened_at "
        f"from {schema}.fct_listens "
        "lateral view explode(arrays_zip(positions, listened_at)) listens as listen "
        "where listen.positions is not null"
    )


def tracks_of(spark: SparkSession, schema: str) -> DataFrame:
    """Every dim_tracks track with its artist, trimmed and case-folded (ml.sequences')."""
    return spark.sql(
        "select cast(track_id as bigint) as track_id, lower(trim(artist_name)) as artist "
        f"from {schema}.dim_tracks order by track_id"
    )


def collect_marts(
    settings: Settings, schema: str
) -> tuple[Interactions, Catalog, Sequences, TrackFeatures]:
    """<schema>'s input marts collected to the driver as Arrow (no Python object per listen):
    the listens with first-listen times, the catalog, every listen in order, every track."""
    from moovitamix.spark import spark_session

    spark = spark_session(settings)
    check_marts(spark, schema)
    listens = timed_listens_of(spark, schema).toArrow()
    interactions = build_interactions(
        listens["user_id"].to_numpy(),
        listens["track_id"].to_numpy(),
        listens["listen_count"].to_numpy(),
        listens["first_seen"].to_numpy() if "first_seen" in listens.column_names else None,
    )
    del listens
    log.info(
        "read %s.fct_listens from Spark: %d users x %d tracks, %d (user, track) pairs",
        schema,
        interactions.n_users,
        interactions.n_tracks,
        interactions.n_interactions,
    )
    users, genres = [
        frame.toArrow().to_pandas(types_mapper=_string_dtype)
        for frame in (users_of(spark, schema).orderBy("user_id"), track_genres_of(spark, schema))
    ]
    n_catalog = spark.table(f"{schema}.dim_tracks").count()
    catalog = catalog_from_frames(interactions, users, genres, int(n_catalog))
    listened = sequences_of(spark, schema).toArrow()
    sequences = build_sequences(
        *(listened[name].to_numpy() for name in ("user_id", "position", "track_id", "listened_at"))
    )
    del listened
    log.info("read %s.fct_listens as sequences from Spark: %s listens", schema, len(sequences))
    tracks = tracks_of(spark, schema).toArrow().to_pandas(types_mapper=_string_dtype)
    features = track_features(
        tracks["track_id"].to_numpy(dtype=np.int64),
        tracks["artist"],
        genres["track_id"].to_numpy(dtype=np.int64),
        genres["genre"],
    )
    return interactions, catalog, sequences, features


def _string_dtype(arrow_type: object) -> object:
    """Arrow strings as pandas' nullable string dtype, as the Postgres reader reads them."""
    return pd.StringDtype() if arrow_type in (pa.string(), pa.large_string()) else None

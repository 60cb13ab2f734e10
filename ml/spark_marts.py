"""The marts the recommender reads, from Spark (the Spark engine's marts, built by dbt-spark).

The user x track pairs are collected to the driver as Arrow (`DataFrame.toArrow`: batches, no
Python object per row) and become the same `Interactions` and `Catalog` as on Postgres, so
training, evaluation and the lists do not know which engine built the marts. This holds while
the matrix fits the driver's memory (16 bytes per pair: 100M pairs ~ 1.6 GB).
"""

from __future__ import annotations

import logging

from ml.interactions import (
    Catalog,
    Interactions,
    MartsNotReady,
    build_interactions,
    catalog_from_frames,
)
from moovitamix.settings import Settings
from moovitamix.spark import spark_session

log = logging.getLogger(__name__)

INPUT_MARTS = ("fct_listens", "dim_users", "dim_tracks", "bridge_track_genres")


def read_spark_marts(settings: Settings, schema: str) -> tuple[Interactions, Catalog]:
    """<schema>.fct_listens and the catalog marts, from the Spark engine's metastore."""
    spark = spark_session(settings)
    missing = [t for t in INPUT_MARTS if not spark.catalog.tableExists(f"{schema}.{t}")]
    if missing:
        raise MartsNotReady(
            f"input mart(s) missing: {', '.join(f'{schema}.{m}' for m in missing)} "
            "(run the transform step first)"
        )
    listens = spark.sql(
        "select cast(user_id as bigint) as user_id, cast(track_id as bigint) as track_id, "
        f"cast(listen_count as int) as listen_count from {schema}.fct_listens "
        "where listen_count > 0"
    ).toArrow()
    interactions = build_interactions(
        listens["user_id"].to_numpy(),
        listens["track_id"].to_numpy(),
        listens["listen_count"].to_numpy(),
    )
    log.info(
        "read %s.fct_listens from Spark: %d users x %d tracks, %d (user, track) pairs",
        schema,
        interactions.n_users,
        interactions.n_tracks,
        interactions.n_interactions,
    )
    users = spark.sql(
        "select cast(user_id as bigint) as user_id, cast(favorite_genre_id as string) as genre "
        f"from {schema}.dim_users order by user_id"
    ).toArrow()
    bridge = spark.sql(
        "select distinct cast(track_id as bigint) as track_id, cast(genre_id as string) as genre "
        f"from {schema}.bridge_track_genres where genre_id is not null"
    ).toArrow()
    n_catalog = spark.table(f"{schema}.dim_tracks").count()
    catalog = catalog_from_frames(
        interactions,
        users.to_pandas(types_mapper=_string_dtype),
        bridge.to_pandas(types_mapper=_string_dtype),
        int(n_catalog),
    )
    return interactions, catalog


def _string_dtype(arrow_type: object) -> object:
    """Arrow strings as pandas' nullable string dtype, as the Postgres reader reads them."""
    import pandas as pd
    import pyarrow as pa

    return pd.StringDtype() if arrow_type in (pa.string(), pa.large_string()) else None

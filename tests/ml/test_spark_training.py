"""The recommender on the Spark engine, on a real local Spark: it reads the same inputs from
Spark marts as from Postgres marts, and a training run publishes the lists to Postgres (the
app's copy) and to the lake (Spark views), the same rows in both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml.config import MlConfig
from ml.train import read_inputs, read_sequences, run_training
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import Settings
from moovitamix.warehouse import connect
from tests.conftest import create_warehouse
from tests.ml.synthetic import SyntheticMarts, write_spark_marts

pytestmark = [pytest.mark.integration, pytest.mark.spark]

DATABASES = ("marts", "recommendations")


@pytest.fixture
def spark_marts(spark, structured_marts: SyntheticMarts) -> Iterator[object]:
    def clean() -> None:
        for database in DATABASES:
            spark.sql(f"drop database if exists {database} cascade")

    clean()
    write_spark_marts(spark, structured_marts, "marts")
    yield spark
    clean()


def test_the_inputs_read_from_spark_equal_those_read_from_postgres(
    spark_marts,
    spark_settings: Settings,
    marts_url: ConnectionURL,
    admin_url: ConnectionURL,
    structured_marts: SyntheticMarts,
) -> None:
    from_postgres = read_inputs(marts_url)
    from_spark = read_inputs(create_warehouse(admin_url), "marts", spark_settings)

    a, b = from_postgres.interactions, from_spark.interactions
    assert a.n_interactions == b.n_interactions > 0
    assert np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.track_ids, b.track_ids)
    assert (a.matrix != b.matrix).nnz == 0
    assert a.first_seen is not None and b.first_seen is not None
    assert np.array_equal(a.first_seen, b.first_seen) and a.first_seen.min() > 0
    c, d = from_postgres.catalog, from_spark.catalog
    assert np.array_equal(c.user_ids, d.user_ids)
    assert np.array_equal(c.favorite_genre, d.favorite_genre)
    assert c.genre_names == d.genre_names and c.n_catalog_tracks == d.n_catalog_tracks
    assert (c.track_genres != d.track_genres).nnz == 0
    assert from_postgres.sequences is None  # read for "play next" only, on Postgres
    e, f = read_sequences(marts_url), from_spark.sequences
    assert f is not None
    assert len(e) == len(f) == len(structured_marts.event_user)
    for column in ("user_id", "position", "track_id", "listened_at"):
        assert np.array_equal(getattr(e, column), getattr(f, column)), column
    g, h = from_postgres.tracks, from_spark.tracks
    assert np.array_equal(g.track_ids, h.track_ids) and len(g.track_ids) > a.n_tracks
    assert np.array_equal(g.artist, h.artist) and g.artist.max() > 0
    assert g.genre_names == h.genre_names and (g.genres != h.genres).nnz == 0


def test_training_on_spark_publishes_the_same_lists_to_postgres_and_the_lake(
    spark_marts,
    spark_settings: Settings,
    admin_url: ConnectionURL,
    ml_config: MlConfig,
    tmp_path: Path,
) -> None:
    spark = spark_marts
    warehouse = create_warehouse(admin_url)
    settings = replace(spark_settings, lake_url=(tmp_path / "lake").as_uri())
    result = run_training(settings, "run-spark-1", config=ml_config, warehouse=warehouse)
    assert result.rows_published["user_top_tracks"] > 0

    with connect(warehouse) as conn:
        in_postgres = sorted(
            conn.execute(
                "select user_id, rank, track_id, source, model_run_id "
                "from recommendations.user_top_tracks"
            ).fetchall()
        )
        similar = conn.execute("select count(*) from recommendations.similar_tracks").fetchone()
    in_lake = sorted(
        tuple(row)
        for row in spark.sql(
            "select user_id, rank, track_id, source, model_run_id "
            "from recommendations.user_top_tracks"
        ).collect()
    )
    assert in_lake == in_postgres
    assert spark.table("recommendations.similar_tracks").count() == similar[0] > 0
    assert (
        tmp_path / "lake" / "recommendations" / "user_top_tracks" / "run_id=run-spark-1"
    ).is_dir()


def test_training_on_spark_without_the_marts_fails_with_one_clear_line(
    spark, spark_settings: Settings, admin_url: ConnectionURL, ml_config: MlConfig
) -> None:
    from ml.train import TrainingFailed

    spark.sql("drop database if exists marts cascade")
    with pytest.raises(TrainingFailed, match=r"input mart\(s\) missing: marts.fct_listens"):
        run_training(
            spark_settings, "run-x", config=ml_config, warehouse=create_warehouse(admin_url)
        )


def test_above_the_threshold_training_runs_in_spark_and_publishes_the_same_way(
    spark_marts,
    spark_settings: Settings,
    admin_url: ConnectionURL,
    make_config,
    tmp_path: Path,
) -> None:
    """Past `[spark] mllib_above_pairs` the run trains with MLlib (ml/train_spark.py): ALS
    only (the config searches item_knn too), judged on a holdout with per-user intervals; the
    lists reach Postgres and the lake alike, never a heard track, and ml.model_runs says so."""
    spark = spark_marts
    warehouse = create_warehouse(admin_url)
    settings = replace(spark_settings, lake_url=(tmp_path / "lake").as_uri())
    config = make_config("spark.mllib_above_pairs=0", "evaluation.k=10")
    result = run_training(settings, "run-mllib-1", config=config, warehouse=warehouse)

    assert result.artifact_path is None and result.rows_published["user_top_tracks"] > 0
    assert result.split == "holdout" and result.model_runs
    model_play_next = "mllib_item_factors (dot)"
    assert result.play_next == (model_play_next if result.source == "als" else "genre_popularity")
    assert f"play next: {result.play_next}" in result.summary
    with connect(warehouse) as conn:
        rows = conn.execute(
            "select family, split, status, metrics->>'trainer', metrics->'gains', "
            "metrics->'split'->>'reason', metrics->'test'->'play_next' from ml.model_runs"
        ).fetchall()
    trainers = {row[3] for row in rows}
    assert {row[0] for row in rows} <= {"als", "popularity", "genre_popularity"}
    assert {row[1] for row in rows} == {"holdout"}
    assert all(row[5].startswith("per-user holdout (MLlib") for row in rows)
    # every candidate's gain over the best baseline is a bootstrap interval
    for family, _, _, _, gains, _, _ in rows:
        if family == "als":
            assert gains["vs_baseline"]["low"] <= gains["vs_baseline"]["high"]
    (served,) = [row for row in rows if row[2] == "champion"]
    assert served[6]["model"] == result.play_next and 0 <= served[6]["next_hit_popularity"] <= 1
    with connect(warehouse) as conn:
        in_postgres = sorted(
            conn.execute(
                "select user_id, rank, track_id, source from recommendations.user_top_tracks"
            ).fetchall()
        )
    assert trainers <= {"mllib", None} and "mllib" in trainers
    in_lake = sorted(
        tuple(row)
        for row in spark.sql(
            "select user_id, rank, track_id, source from recommendations.user_top_tracks"
        ).collect()
    )
    assert in_lake == in_postgres
    with connect(warehouse) as conn:  # every catalog track has a "play next", played or not
        with_play_next = conn.execute(
            "select distinct track_id from recommendations.similar_tracks"
        ).fetchall()
    catalog = spark.sql("select track_id from marts.dim_tracks").collect()
    assert sorted(r[0] for r in with_play_next) == sorted(r.track_id for r in catalog)
    heard = {
        (row.user_id, row.track_id)
        for row in spark.sql("select user_id, track_id from marts.fct_listens").collect()
    }
    assert not heard & {(user, track) for user, _, track, _ in in_postgres}

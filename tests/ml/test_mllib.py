"""Training in Spark with MLlib (ml/mllib), on a real local Spark and the synthetic marts with
scenes inside genres: the split follows the per-user holdout's rule and is deterministic; the
baselines and metrics computed in Spark equal ml/evaluate.py's on the same held-out pairs, per
user and in the same user order (so ml.selection.decide pairs them); `next_hit` equals a
brute-force count; MLlib's ALS beats popularity and stays near implicit's ALS on the same
split; the search is ALS only; the lists keep the publishing rules; a whole run writes them to
the lake and streams them back in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
from pyspark import StorageLevel

from ml.baselines import GENRE_POPULARITY, POPULARITY
from ml.config import ConfigError, Evaluation, MlConfig, load_config
from ml.evaluate import METRIC_NAMES, NEXT_HIT, EvaluationData, evaluate_baselines
from ml.evaluate import evaluate_model as evaluate_implicit
from ml.families.factors import confidence
from ml.interactions import Interactions, MartsNotReady
from ml.lake_lists import LakeLists
from ml.lists import MODEL as MODEL_SOURCE
from ml.mllib import run as mllib_run
from ml.mllib.als import MllibFit, item_factors, ratings, top_k_unheard
from ml.mllib.data import SparkMarts, collect_marts, listens_of, read_marts, use_mllib
from ml.mllib.lists import (
    USER_COLUMNS,
    build_lists,
    lake_batches,
    model_similar,
    popularity_similar,
    write_lists,
)
from ml.mllib.metrics import next_hit
from ml.mllib.metrics import ranking_metrics as spark_ranking_metrics
from ml.mllib.split import SparkHoldout, leave_k_out
from ml.params import AlsParams, EaseParams, ItemKnnParams
from ml.quality import ACCURACY, catalog_coverage, per_user_ranking_metrics
from ml.selection import CHAMPION, decide
from ml.split import NotEnoughData, Split
from moovitamix.settings import Settings
from tests.ml.synthetic import SyntheticMarts, write_spark_marts

pytestmark = [pytest.mark.integration, pytest.mark.spark]

SCHEMA = "marts_mllib"
K = 10
# Small and fast: rank 16, 8 iterations, 2 ALS blocks on local[2]; log confidence, alpha 15.
MODEL = {"factors": 16, "iterations": 8, "regularization": 1.0, "alpha": 15.0}
# MLlib's ALS is not implicit's (exact least squares instead of conjugate gradient, ALS-WR
# scaled regularization, its own random start): on the same split with the same parameters its
# NDCG@10 must stay within this share of implicit's.
TOLERANCE = 0.15


def small_config(*overrides: str) -> MlConfig:
    return load_config(
        values={
            "model": MODEL,
            "runtime": {"num_threads": 1},
            "selection": {"max_challengers": 0},
            "spark": {"als_blocks": 2},
        },
        overrides=overrides,
    )


@pytest.fixture(scope="module")
def spark_marts(spark, structured_marts: SyntheticMarts) -> Iterator[SparkMarts]:
    spark.sql(f"drop database if exists {SCHEMA} cascade")
    write_spark_marts(spark, structured_marts, SCHEMA)
    marts = read_marts(spark, SCHEMA)
    yield marts
    marts.unpersist()
    spark.sql(f"drop database if exists {SCHEMA} cascade")


@dataclass
class Compared:
    """One split, judged in Spark and, on the same held-out pairs, by ml/evaluate.py."""

    holdout: SparkHoldout
    interactions: Interactions  # the driver path's matrix of the same marts
    data: EvaluationData  # the Spark split as ml.evaluate's holdout over that matrix
    spark_baselines: dict[str, dict[str, float]]
    spark_per_user: dict[str, dict[str, np.ndarray]]  # baselines' per-user values
    mllib: MllibFit
    mllib_lists: pd.DataFrame  # user_id, rank, track_id of the evaluated users
    mllib_metrics: dict[str, float]
    mllib_per_user: dict[str, np.ndarray]
    next_hits: dict[str, float]  # ml.mllib.run.next_track_metrics of the MLlib fit


def _driver_data(
    spark_settings: Settings, holdout: SparkHoldout, config: MlConfig
) -> tuple[Interactions, EvaluationData]:
    interactions, catalog, _, _ = collect_marts(spark_settings, SCHEMA)
    test = holdout.test.toPandas()
    held = sp.csr_matrix(
        (
            np.ones(len(test), dtype=np.float32),
            (
                interactions.rows_of(test["user_id"].to_numpy()),
                interactions.cols_of(test["track_id"].to_numpy()),
            ),
        ),
        shape=interactions.matrix.shape,
    )
    valid = interactions.matrix.multiply(held).tocsr()
    train = (interactions.matrix - valid).tocsr()
    train.eliminate_zeros()
    valid.eliminate_zeros()
    users = holdout.eval_users.toPandas()["user_id"].to_numpy()
    eval_rows = np.sort(interactions.rows_of(users))
    no_test = sp.csr_matrix(interactions.matrix.shape, dtype=np.float32)
    none = np.empty(0, dtype=np.int64)
    split = Split(train, valid, no_test, eval_rows, none, "holdout", holdout.reason)
    data = EvaluationData(
        split,
        catalog.favorite_genre_of(interactions.user_ids),
        catalog.track_genres,
        catalog.n_catalog_tracks,
        config.evaluation,
    )
    return interactions, data


@pytest.fixture(scope="module")
def compared(spark_marts: SparkMarts, spark_settings: Settings) -> Iterator[Compared]:
    config = small_config()
    holdout = leave_k_out(spark_marts.listens, config.evaluation)
    baselines = mllib_run.evaluate_baselines(spark_marts, holdout, K)
    fitted = mllib_run.fit_on(spark_marts, config.model, config.spark.als_blocks, holdout)
    lists = top_k_unheard(fitted.model, holdout.eval_users, holdout.train, K, spark_marts.n_tracks)
    lists = lists.persist()
    metrics, per_user = spark_ranking_metrics(lists, holdout, K, spark_marts.n_catalog_tracks)
    collected = lists.toPandas()
    lists.unpersist()
    next_hits = mllib_run.next_track_metrics(spark_marts, holdout, fitted, K, "dot")
    interactions, data = _driver_data(spark_settings, holdout, config)
    yield Compared(
        holdout=holdout,
        interactions=interactions,
        data=data,
        spark_baselines={name: scored.metrics for name, scored in baselines.items()},
        spark_per_user={name: scored.per_user for name, scored in baselines.items()},
        mllib=fitted,
        mllib_lists=collected,
        mllib_metrics=metrics,
        mllib_per_user=per_user,
        next_hits=next_hits,
    )
    holdout.unpersist()


def _pairs(frame) -> list[tuple[int, int]]:
    return sorted((int(r["user_id"]), int(r["track_id"])) for r in frame.collect())


def test_the_spark_section_of_the_config_is_typed_and_decides_the_path(
    spark_marts: SparkMarts,
) -> None:
    spark = spark_marts.listens.sparkSession
    assert load_config().spark.mllib_above_pairs == 25_000_000
    assert use_mllib(
        spark, SCHEMA, small_config(f"spark.mllib_above_pairs={spark_marts.n_pairs - 1}")
    )
    assert not use_mllib(
        spark, SCHEMA, small_config(f"spark.mllib_above_pairs={spark_marts.n_pairs}")
    )
    with pytest.raises(
        ConfigError, match=r"spark\.mllib_above_pairs: Input should be a valid integer"
    ):
        small_config("spark.mllib_above_pairs=lots")
    with pytest.raises(
        ConfigError, match=r"spark\.als_blocks: Input should be greater than or equal to 0"
    ):
        small_config("spark.als_blocks=-1")
    with pytest.raises(MartsNotReady, match=r"input mart\(s\) missing: nowhere\.fct_listens"):
        use_mllib(spark, "nowhere", small_config())


def test_the_split_follows_leave_k_out_rule_and_is_deterministic(
    spark_marts: SparkMarts,
) -> None:
    rule = Evaluation(holdout_per_user=2, min_user_tracks=5, max_eval_users=300, seed=7)
    first = leave_k_out(spark_marts.listens, rule)
    again = leave_k_out(spark_marts.listens, rule)
    other = leave_k_out(spark_marts.listens, rule, seed=8)
    try:
        held = _pairs(first.test)
        assert held == _pairs(again.test)
        assert held != _pairs(other.test)
        listens = spark_marts.listens.toPandas()
        per_user = listens.groupby("user_id").size()
        evaluated = sorted(int(u) for u in first.eval_users.toPandas()["user_id"])
        assert len(evaluated) == first.n_eval == 300 < first.n_eligible
        assert first.n_eligible == int((per_user >= 5).sum())
        assert (per_user[evaluated] >= 5).all()
        held_users = pd.Series([u for u, _ in held])
        assert (held_users.value_counts() == 2).all()
        assert sorted(set(held_users)) == evaluated
        train = _pairs(first.train)
        assert not set(train) & set(held)
        assert len(train) + len(held) == len(listens) == first.n_train + first.n_test
    finally:
        for holdout in (first, again, other):
            holdout.unpersist()


def test_too_few_eligible_users_is_one_clear_error(spark_marts: SparkMarts) -> None:
    rule = Evaluation(min_user_tracks=10_000, holdout_per_user=2, min_eval_users=20)
    with pytest.raises(NotEnoughData, match="only 0 users have >= 10000 distinct tracks"):
        leave_k_out(spark_marts.listens, rule)


def test_baselines_in_spark_equal_ml_evaluate_on_the_same_held_out_pairs(
    compared: Compared,
) -> None:
    in_driver = evaluate_baselines(compared.data)
    assert set(compared.spark_baselines) == set(in_driver)
    for name, metrics in compared.spark_baselines.items():
        assert metrics == pytest.approx(in_driver[name].metrics, rel=1e-9), name
        # per user, in the same order (user ids ascending = the matrix's rows)
        for metric in ACCURACY:
            spark_values = compared.spark_per_user[name][metric]
            assert len(spark_values) == compared.holdout.n_eval
            assert spark_values == pytest.approx(in_driver[name].per_user[metric], abs=1e-12)


def _brute_next_hit(data: EvaluationData, lists: dict[int, set[int]]) -> float:
    """next_hit@k by a plain loop: per evaluated user, the share of their training tracks
    whose list (track column -> set of track columns) holds one of their held-out tracks."""
    fold = data.split.validation()
    shares = []
    for row in fold.eval_rows:
        seeds = fold.train[row].indices
        held = set(fold.test[row].indices)
        shares.append(np.mean([bool(lists.get(int(s), set()) & held) for s in seeds]))
    return float(np.mean(shares))


def _popular_lists(data: EvaluationData, k: int, by_genre: bool) -> dict[int, set[int]]:
    """ml.baselines' "play next" by a plain sort: other tracks by most genres shared with the
    seed (by_genre), then training listeners, then the lower id."""
    train = data.split.train
    n = train.shape[1]
    listeners = np.diff(train.tocsc().indptr)
    shared = (data.track_genres @ data.track_genres.T).toarray()
    lists = {}
    for seed in range(n):
        genres = shared[seed] if by_genre else np.zeros(n)
        order = np.lexsort((np.arange(n), -listeners, -genres))
        lists[seed] = set(order[order != seed][:k].tolist())
    return lists


def test_next_hit_in_spark_equals_a_brute_force_count(
    compared: Compared, spark_marts: SparkMarts
) -> None:
    interactions = compared.interactions
    for name, by_genre in ((POPULARITY, False), (GENRE_POPULARITY, True)):
        expected = _brute_next_hit(compared.data, _popular_lists(compared.data, K, by_genre))
        assert compared.next_hits[f"{NEXT_HIT}_{name}"] == pytest.approx(expected, rel=1e-9)
    # the model's own lists (its item-factor neighbours), counted the same way
    similar = model_similar(compared.mllib.model, K).toPandas()
    lists: dict[int, set[int]] = {}
    for seed, picked in similar.groupby("track_id")["similar_track_id"]:
        lists[int(interactions.cols_of(np.array([seed]))[0])] = set(
            interactions.cols_of(picked.to_numpy()).tolist()
        )
    assert compared.next_hits[NEXT_HIT] == pytest.approx(
        _brute_next_hit(compared.data, lists), rel=1e-9
    )
    assert compared.next_hits[NEXT_HIT] > compared.next_hits[f"{NEXT_HIT}_{POPULARITY}"]
    # a list that never holds a held-out track scores 0
    empty = popularity_similar(spark_marts, compared.holdout.train, K, by_genre=False).limit(0)
    assert next_hit(empty, compared.holdout, K) == 0.0


def test_the_metrics_in_spark_equal_ml_evaluate_of_the_same_lists(compared: Compared) -> None:
    data, interactions = compared.data, compared.interactions
    fold = data.split.validation()
    lists = compared.mllib_lists
    rows = interactions.rows_of(lists["user_id"].to_numpy())
    position = np.searchsorted(fold.eval_rows, rows)
    assert np.array_equal(fold.eval_rows[position], rows)
    ids = np.full((len(fold.eval_rows), K), -1, dtype=np.int64)
    ids[position, lists["rank"].to_numpy() - 1] = interactions.cols_of(lists["track_id"].to_numpy())
    expected = per_user_ranking_metrics(ids, fold.test[fold.eval_rows], K)
    for metric in ACCURACY:
        assert compared.mllib_per_user[metric] == pytest.approx(expected[metric], abs=1e-12)
        assert compared.mllib_metrics[metric] == pytest.approx(expected[metric].mean(), rel=1e-9)
    coverage = catalog_coverage(ids, data.n_catalog_tracks)
    assert compared.mllib_metrics["coverage"] == pytest.approx(coverage, rel=1e-9)
    assert compared.mllib_metrics["ndcg"] > 0


def test_mllib_als_beats_popularity_and_is_near_implicit_on_the_same_split(
    compared: Compared,
) -> None:
    settings = compared.data.settings.model_copy(update={"favorite_genre_depths": ()})
    plain = replace(compared.data, settings=settings)  # MLlib's lists are not re-ranked
    implicit, _ = evaluate_implicit(plain, small_config().model, "implicit", 1)
    mllib = compared.mllib_metrics["ndcg"]
    popularity = compared.spark_baselines["popularity"]["ndcg"]
    genre = compared.spark_baselines[GENRE_POPULARITY]["ndcg"]
    print(
        f"NDCG@{K}: mllib {mllib:.4f}, implicit {implicit.metrics['ndcg']:.4f}, "
        f"popularity {popularity:.4f}, genre_popularity {genre:.4f}"
    )
    assert mllib > 1.5 * popularity
    assert mllib == pytest.approx(implicit.metrics["ndcg"], rel=TOLERANCE)


def _check_user_lists(frame: pd.DataFrame, spark_marts: SparkMarts, k: int) -> None:
    users = spark_marts.users.toPandas()
    assert sorted(frame["user_id"].unique()) == sorted(users["user_id"])
    assert (frame.groupby("user_id").size() == k).all()
    ranks = frame.sort_values(["user_id", "rank"]).groupby("user_id")["rank"].apply(list)
    assert all(r == list(range(1, k + 1)) for r in ranks)
    heard = spark_marts.listens.select("user_id", "track_id").toPandas()
    overlap = frame.merge(heard, on=["user_id", "track_id"])
    assert overlap.empty
    assert not frame.duplicated(["user_id", "track_id"]).any()


def test_the_als_lists_have_k_unheard_tracks_per_user_ranked_1_to_k(
    compared: Compared, spark_marts: SparkMarts, structured_marts: SyntheticMarts
) -> None:
    lists = build_lists(spark_marts, compared.mllib.model, k=K, similar_k=5)
    users = lists.user_top_tracks.toPandas()
    _check_user_lists(users, spark_marts, K)
    silent = set(spark_marts.users.toPandas()["user_id"]) - set(
        spark_marts.listens.toPandas()["user_id"]
    )
    assert silent
    sources = users.groupby(users["user_id"].isin(silent))["source"].unique()
    assert set(sources[True]) <= {GENRE_POPULARITY, POPULARITY}
    assert set(sources[False]) == {MODEL_SOURCE}
    similar = lists.similar_tracks.toPandas()
    # every catalog track has a "play next", played or not
    assert (similar.groupby("track_id").size() == 5).all()
    assert sorted(similar["track_id"].unique()) == sorted(structured_marts.track_ids)
    assert spark_marts.n_catalog_tracks > spark_marts.n_tracks
    assert not (similar["track_id"] == similar["similar_track_id"]).any()
    by_rank = similar.sort_values(["track_id", "rank"]).groupby("track_id")
    assert by_rank["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    played = compared.interactions.track_ids
    assert similar["similar_track_id"].isin(played).all()
    heard_lists = similar[similar["track_id"].isin(played)].sort_values(["track_id", "rank"])
    assert heard_lists.groupby("track_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    # an unplayed track: played tracks sharing most of its genres, then the most listeners
    m = structured_marts
    listeners = pd.Series(m.listen_user).groupby(m.listen_track).nunique()
    genre_sets = {int(t): set(g[g >= 0]) for t, g in zip(m.track_ids, m.track_genre, strict=True)}
    unplayed = [int(t) for t in m.track_ids if t not in listeners.index]
    for track in unplayed[:3]:
        ranked = sorted(
            listeners.index,
            key=lambda t: (-len(genre_sets[track] & genre_sets[int(t)]), -listeners[t], t),
        )
        got = similar[similar["track_id"] == track].sort_values("rank")["similar_track_id"]
        assert got.tolist() == [int(t) for t in ranked[:5]], track
    # the dot product of the item factors, as FactorModel.similar ranks them
    ids, factors = item_factors(compared.mllib.model)
    first = similar[similar["track_id"] == ids[0]].sort_values("rank")
    scores = factors[1:] @ factors[0]
    assert first["similar_track_id"].tolist() == ids[1:][np.argsort(-scores)[:5]].tolist()


def test_a_run_in_spark_decides_by_ml_selection_and_writes_the_lists_to_the_lake(
    spark_marts: SparkMarts, spark_settings: Settings, tmp_path: Path
) -> None:
    spark = spark_marts.listens.sparkSession
    config = small_config()
    run = mllib_run.run_mllib(spark, SCHEMA, config, today=date(2026, 12, 5))
    try:
        assert [c.name for c in run.candidates] == ["champion"]
        assert set(run.baselines) == {POPULARITY, GENRE_POPULARITY}
        n_eval = run.split[2]["valid_users"]
        for scored in [*run.baselines.values(), *run.candidates]:
            assert set(scored.metrics) == set(METRIC_NAMES)
            assert {len(v) for v in scored.per_user.values()} == {n_eval}
        assert run.decision == decide(
            run.candidates, run.baselines, "ndcg", config.evaluation.bootstrap()
        )
        assert set(run.decision.gains[0]) == {"vs_baseline"}
        assert (run.serving is None) == (run.decision.baseline is not None)
        kind, reason, sizes = run.split
        assert kind == "holdout" and reason.startswith("per-user holdout (MLlib")
        assert sizes["valid_users"] == sizes["eligible_users"] > 0 == sizes["test_users"]
        next_hits = {NEXT_HIT, f"{NEXT_HIT}_{POPULARITY}", f"{NEXT_HIT}_{GENRE_POPULARITY}"}
        assert next_hits - {NEXT_HIT} <= set(run.play_next)
        if run.serving is not None:
            assert run.play_next["model"] == "mllib_item_factors (dot)"
            assert NEXT_HIT in run.play_next
        runs = mllib_run.model_runs(run, "run-mllib-1", datetime.now(UTC), config, "run-0-m00")
        assert [r.status for r in runs if r.model_run_id.startswith("run-mllib-1-m")] == list(
            run.decision.statuses
        )
        assert sum(r.status == CHAMPION for r in runs) == 1
        assert runs[0].metrics["refit_of"] == "run-0-m00" and runs[0].params["model"] == "als"
        assert runs[0].family == "als" and {r.split for r in runs} == {"holdout"}
        assert runs[0].n_interactions == spark_marts.n_pairs
        served = next(r for r in runs if r.status == CHAMPION)
        assert served.metrics["test"] == {"play_next": run.play_next}
        assert served.metrics["split"]["reason"] == reason

        settings = replace(spark_settings, lake_url=(tmp_path / "lake").as_uri())
        at = datetime(2026, 12, 5, 3, tzinfo=UTC)
        rows = write_lists(run.lists, settings.lake, "run-mllib-1", "run-mllib-1-m00", at)
    finally:
        run.release()
    assert rows["user_top_tracks"] == K * spark_marts.users.count()
    assert rows["similar_tracks"] == K * spark_marts.n_catalog_tracks  # played or not

    batches = list(lake_batches(settings.lake, "user_top_tracks", "run-mllib-1", 1000))
    assert max(b.num_rows for b in batches) <= 1000
    assert sum(b.num_rows for b in batches) == rows["user_top_tracks"]
    schema = batches[0].schema
    assert schema.names == list(USER_COLUMNS)
    assert [str(t) for t in schema.types] == [
        "int64",
        "int32",
        "int64",
        "double",
        "string",
        "string",
        "timestamp[us, tz=UTC]",
    ]
    users = pa.Table.from_batches(batches).to_pandas()
    _check_user_lists(users, spark_marts, K)
    assert (users["model_run_id"] == "run-mllib-1-m00").all()
    assert (users["generated_at"] == pd.Timestamp(at)).all()
    expected = {MODEL_SOURCE} if run.serving is not None else {GENRE_POPULARITY, POPULARITY}
    listened = users["user_id"].isin(spark_marts.listens.toPandas()["user_id"])
    assert set(users.loc[listened, "source"]) <= expected

    lake = LakeLists(settings, "run-mllib-1")
    try:
        lake.publish_views()
        assert spark.table("recommendations.user_top_tracks").count() == len(users)
        assert spark.table("recommendations.similar_tracks").count() == rows["similar_tracks"]
    finally:
        spark.sql("drop database if exists recommendations cascade")


def test_ids_beyond_32_bits_fail_with_one_line_and_leave_nothing_cached(
    spark, structured_marts: SyntheticMarts
) -> None:
    schema = "marts_mllib_big_ids"
    first = structured_marts.listen_user[0]  # one user's id moves beyond 32 bits
    moved = {
        "user_ids": structured_marts.user_ids,
        "listen_user": structured_marts.listen_user,
        "event_user": structured_marts.event_user,
    }
    moved = {name: np.where(ids == first, first + 2**31, ids) for name, ids in moved.items()}
    marts = replace(structured_marts, **moved)
    spark.sql(f"drop database if exists {schema} cascade")
    write_spark_marts(spark, marts, schema)
    try:
        probe = listens_of(spark, schema).persist()  # the check below sees a cached read
        assert listens_of(spark, schema).storageLevel != StorageLevel.NONE
        probe.unpersist()
        with pytest.raises(mllib_run.IdsTooLarge, match=r"32-bit ids: a user_id or track_id"):
            mllib_run.run_mllib(spark, schema, small_config())
        assert listens_of(spark, schema).storageLevel == StorageLevel.NONE
    finally:
        spark.sql(f"drop database if exists {schema} cascade")


@pytest.mark.parametrize("scheme", ["log", "bm25", "raw"])
def test_the_ratings_carry_ml_model_confidence_times_alpha(
    compared: Compared, spark_marts: SparkMarts, scheme: str
) -> None:
    params = small_config(f"model.confidence='{scheme}'", "model.alpha=4.0").model
    rated = ratings(spark_marts.listens, params, spark_marts.n_tracks).toPandas()
    interactions = compared.interactions
    expected = confidence(interactions.matrix, params)[
        interactions.rows_of(rated["user"].to_numpy()),
        interactions.cols_of(rated["item"].to_numpy()),
    ]
    # MLlib's confidence 1 + alpha x rating is implicit's alpha x w (above the floor)
    mllib_confidence = 1 + params.alpha * rated["rating"].to_numpy()
    implicit_confidence = params.alpha * np.asarray(expected).ravel()
    above = implicit_confidence > 1
    assert above.mean() > 0.5
    assert np.allclose(mllib_confidence[above], implicit_confidence[above], rtol=1e-5)
    assert np.allclose(mllib_confidence[~above], 1, atol=1e-4)


def test_mllib_searches_als_only_and_refits_an_als_champion() -> None:
    """MLlib has only ALS: other families leave the search, and a champion (or [model]) of
    another family is replaced by ALS parameters; an ALS champion is refit as it is."""
    config = small_config("search.families=['als', 'item_knn', 'ease']")
    assert config.search.families == ("als", "item_knn", "ease")
    searched, start = mllib_run.als_only(config, ItemKnnParams())
    assert searched.search.families == ("als",) and start == config.model
    assert isinstance(start, AlsParams) and searched.model == config.model
    champion = AlsParams(factors=24)
    assert mllib_run.als_only(config, champion)[1] is champion
    assert mllib_run.als_only(config, None)[1] == config.model
    other = config.model_copy(update={"model": EaseParams()})
    searched, start = mllib_run.als_only(other, None)
    assert start == AlsParams() and searched.model == AlsParams()

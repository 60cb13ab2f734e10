"""The daily training step end to end, on synthetic marts in a fresh warehouse."""

import json
from pathlib import Path

import numpy as np
import pytest

from ml.interactions import load_catalog, load_interactions
from ml.registry import load_model
from ml.rerank import reranked
from ml.train import TrainingFailed, run_training
from moovitamix.warehouse import connect

pytestmark = pytest.mark.integration


def _one(url, query: str, params=()):
    with connect(url) as conn:
        return conn.execute(query, params).fetchone()


def _all(url, query: str, params=()):
    with connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_a_run_beats_the_baselines_and_publishes_complete_lists(
    marts_url, ml_config, ml_settings
) -> None:
    result = run_training(
        ml_settings, "20261126T000000Z-aaaaaa", config=ml_config, warehouse=marts_url
    )
    k = ml_config.publish.k

    # a model beats both baselines on data with structure beyond genres, on validation and
    # on test, where its interval lies above the best baseline's
    assert result.source in ml_config.search.families and result.alerts == []
    for name, baseline in result.baseline_metrics.items():
        assert result.metrics["ndcg"] > baseline["ndcg"], name
    served = result.test["model"]
    assert served["ndcg"]["low"] <= served["ndcg"]["mean"] <= served["ndcg"]["high"]
    assert served["gain_vs_genre_popularity"]["low"] > 0
    assert served["gain_vs_popularity"]["low"] > 0
    assert set(served["segments"]) >= {"1-4", "5-20", "20+"}
    assert 0 < served["coverage"] <= 1 and 0 <= served["novelty"] <= 1
    assert served["churn"] is None or np.isnan(served["churn"])  # a first day: nothing before
    assert result.split == "time"  # the synthetic histories span days
    assert "test ndcg@10" in result.summary and "play next: " in result.summary

    # one ml.model_runs row per candidate, exactly one champion with the artifact
    runs = _all(
        marts_url,
        "select model_run_id, status, params, metrics, baseline_metrics, n_users, n_tracks, "
        "n_interactions, artifact_path, family, split from ml.model_runs order by model_run_id",
    )
    assert len(runs) == 1 + ml_config.selection.max_challengers
    assert [r[1] for r in runs].count("champion") == 1
    assert {r[1] for r in runs} <= {"champion", "challenger", "rejected"}
    champion = next(r for r in runs if r[1] == "champion")
    assert champion[0] == result.serving_model_run_id
    assert champion[9] == result.source == champion[2]["family"] and champion[10] == "time"
    assert set(champion[4]) == {"popularity", "genre_popularity"}
    assert champion[3]["split"]["reason"].startswith("time split")
    assert champion[3]["gains"]["vs_baseline"]["low"] > 0
    assert champion[3]["test"]["model"]["ndcg"]["mean"] == served["ndcg"]["mean"]
    # the "play next" comparison: held-out next listens, the published model named
    play_next = champion[3]["test"]["play_next"]
    assert play_next["model"] == result.play_next and "test_popularity_hit" in play_next
    n_listens = _one(marts_url, "select count(*) from marts.fct_listens")[0]
    assert champion[7] == n_listens and champion[5] > 0 and champion[6] > 0
    assert champion[8] == str(result.artifact_path)
    assert all(r[8] is None for r in runs if r[1] != "champion")

    # every user of dim_users gets exactly k rows, ranked 1..k, none already heard
    n_users = _one(marts_url, "select count(*) from marts.dim_users")[0]
    per_user = _one(
        marts_url,
        "select count(*), min(n), max(n), bool_and(ranks = %s::int[]) from ("
        " select user_id, count(*) as n, array_agg(rank order by rank) as ranks"
        " from recommendations.user_top_tracks group by user_id) t",
        (list(range(1, k + 1)),),
    )
    assert per_user == (n_users, k, k, True)
    heard = _one(
        marts_url,
        "select count(*) from recommendations.user_top_tracks r "
        "join marts.fct_listens f using (user_id, track_id)",
    )[0]
    assert heard == 0
    assert result.rows_published["user_top_tracks"] == n_users * k

    # users without listens get their favorite genre's list; users with enough history the
    # model's, but for the one slot of a not-yet-heard track of their favorite genre
    sources = dict(
        _all(
            marts_url,
            "select case when f.n is null then coalesce(u.favorite_genre_id, 'none') "
            "  || ':' || r.source when f.n >= 5 then 'full:' || r.source else r.source end, "
            "  count(*) "
            "from recommendations.user_top_tracks r join marts.dim_users u using (user_id) "
            "left join (select user_id, count(*) n from marts.fct_listens group by 1) f "
            "using (user_id) group by 1",
        )
    )
    silent = {key: n for key, n in sources.items() if ":" in key and not key.startswith("full")}
    assert silent, "the synthetic marts have users without listens"
    genres = {key: n for key, n in silent.items() if key[:4] != "none"}
    assert all(key.endswith((":genre_popularity", ":new_track", ":popularity")) for key in genres)
    in_genre_share = sum(n for key, n in genres.items() if key.endswith(":genre_popularity"))
    assert in_genre_share > 0.8 * sum(genres.values())  # a small genre is filled globally
    assert all(key == "none:popularity" for key in silent if key.startswith("none"))
    assert {key for key in sources if key.startswith("full")} == {"full:model", "full:new_track"}
    assert sources["full:new_track"] < sources["full:model"] / 5  # a small share
    new_tracks = _one(
        marts_url,
        "select count(*), count(*) filter (where b.genre_id is null) "
        "from recommendations.user_top_tracks r join marts.dim_users u using (user_id) "
        "left join marts.bridge_track_genres b "
        "on b.track_id = r.track_id and b.genre_id = u.favorite_genre_id "
        "where r.source = 'new_track'",
    )
    assert new_tracks[0] > 0 and new_tracks[1] == 0  # in the user's favorite genre
    in_genre = _one(
        marts_url,
        "select bool_and(b.genre_id is not null) from recommendations.user_top_tracks r "
        "join marts.dim_users u using (user_id) left join marts.bridge_track_genres b "
        "on b.track_id = r.track_id and b.genre_id = u.favorite_genre_id "
        "where r.source = 'genre_popularity'",
    )[0]
    assert in_genre

    # play next: k per catalog track, listened or not, never itself
    similar = _one(
        marts_url,
        "select count(distinct track_id), min(n), max(n), bool_and(not self) from ("
        " select track_id, count(*) n, bool_or(similar_track_id = track_id) self"
        " from recommendations.similar_tracks group by track_id) t",
    )
    n_catalog = _one(marts_url, "select count(*) from marts.dim_tracks")[0]
    assert similar == (n_catalog, ml_config.publish.similar_k, ml_config.publish.similar_k, True)

    # the saved serving model reloads and reproduces a published list (its model slots)
    loaded = load_model(Path(champion[8]))
    assert loaded.meta["family"] == result.source
    user_id, tracks = _one(
        marts_url,
        "select user_id, array_agg(track_id order by rank) from recommendations.user_top_tracks "
        "where source = 'model' and user_id in (select user_id from marts.fct_listens "
        "group by 1 having count(*) >= 5) group by user_id order by user_id limit 1",
    )
    with connect(marts_url) as conn:
        matrix = load_interactions(conn)
        catalog = load_catalog(conn, matrix)
    row = np.array([np.searchsorted(matrix.user_ids, user_id)])
    depth = champion[3]["favorite_genre_depth"]  # the re-rank validation chose, as recorded
    ids, _ = loaded.model.recommend(row, matrix.matrix, max(k, depth))
    favorite = catalog.favorite_genre_of(matrix.user_ids[row])
    ids = reranked(ids, favorite, catalog.track_genres, k, depth)
    assert loaded.track_ids[ids[0][: len(tracks)]].tolist() == tracks


def test_the_next_run_refits_the_champions_parameters(
    marts_url, tmp_path, ml_settings, make_config
) -> None:
    config = make_config("artifacts.keep=1", "selection.max_challengers=1")
    first = run_training(ml_settings, "20261126T000000Z-aaaaaa", config=config, warehouse=marts_url)
    later = make_config("artifacts.keep=1", "selection.max_challengers=1", "model.factors=16")
    second = run_training(ml_settings, "20261127T000000Z-bbbbbb", config=later, warehouse=marts_url)
    refit = second.model_runs[0]
    assert refit.metrics["role"] == "champion_refit"
    assert refit.metrics["refit_of"] == first.serving_model_run_id
    assert refit.params == next(r.params for r in first.model_runs if r.status == "champion")
    # the config's changed [model] is tried as the first challenger
    assert second.model_runs[1].params["factors"] == 16
    # retention: only the serving model's directory is left
    artifacts = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert artifacts == [second.serving_model_run_id]
    published = _all(marts_url, "select distinct model_run_id from recommendations.user_top_tracks")
    assert published == [(second.serving_model_run_id,)]


def test_when_every_model_loses_the_baseline_is_published_and_an_alert_raised(
    marts_url, ml_settings, make_config
) -> None:
    # a model regularised to nothing: its lists are noise
    config = make_config("model.regularization=100000.0", "selection.time_budget_s=0")
    result = run_training(
        ml_settings, "20261126T000000Z-cccccc", config=config, warehouse=marts_url
    )
    assert result.source == "genre_popularity" and result.artifact_path is None
    assert [a.severity for a in result.alerts] == ["warning"]
    assert "published genre_popularity" in result.alerts[0].title
    runs = _all(
        marts_url,
        "select model_run_id, status, params->>'model' from ml.model_runs order by model_run_id",
    )
    assert result.passed_over > 0 and "challenger(s) over budget" in result.summary
    assert runs == [  # the time budget of 0 left no room for challengers
        ("20261126T000000Z-cccccc-genre_popularity", "champion", "genre_popularity"),
        ("20261126T000000Z-cccccc-m00", "rejected", "als"),
    ]
    sources = {
        s for (s,) in _all(marts_url, "select distinct source from recommendations.user_top_tracks")
    }
    assert sources <= {"genre_popularity", "popularity", "new_track"}
    heard = _one(
        marts_url,
        "select count(*) from recommendations.user_top_tracks r "
        "join marts.fct_listens f using (user_id, track_id)",
    )[0]
    assert heard == 0
    assert _one(marts_url, "select count(*) from recommendations.similar_tracks")[0] > 0


def test_a_failed_run_leaves_yesterdays_lists_and_registry(
    marts_url, ml_config, ml_settings, make_config
) -> None:
    first = run_training(
        ml_settings, "20261126T000000Z-aaaaaa", config=ml_config, warehouse=marts_url
    )
    before = _all(marts_url, "select * from recommendations.user_top_tracks order by 1, 2")
    impatient = make_config("publish.lock_timeout_s=0.5")
    # a reader's open transaction holds the lists: the swap fails after the model runs were
    # recorded in its transaction, and after the lists were staged
    with connect(marts_url) as reader:
        reader.execute("select count(*) from recommendations.user_top_tracks").fetchone()
        with pytest.raises(TrainingFailed, match=r"gave up after waiting 0\.5s"):
            run_training(
                ml_settings, "20261127T000000Z-bbbbbb", config=impatient, warehouse=marts_url
            )
        reader.rollback()
    assert _all(marts_url, "select * from recommendations.user_top_tracks order by 1, 2") == before
    runs = {r for (r,) in _all(marts_url, "select distinct run_id from ml.model_runs")}
    assert runs == {first.run_id}
    leftovers = _all(marts_url, "select tablename from pg_tables where tablename like '%%__new'")
    assert leftovers == []


def test_no_listens_fails_with_one_line(marts_url, ml_config, ml_settings) -> None:
    with connect(marts_url) as conn:
        conn.execute("delete from marts.fct_listens")
    with pytest.raises(TrainingFailed, match="no listens"):
        run_training(ml_settings, "20261126T000000Z-dddddd", config=ml_config, warehouse=marts_url)


def test_a_rerun_under_the_same_run_id_replaces_its_rows(
    marts_url, ml_settings, make_config
) -> None:
    config = make_config("selection.max_challengers=0")
    for _ in range(2):
        result = run_training(
            ml_settings, "20261126T000000Z-ffffff", config=config, warehouse=marts_url
        )
    runs = _all(marts_url, "select model_run_id, status from ml.model_runs")
    assert runs == [(result.serving_model_run_id, "champion")]


def test_the_daily_step_reports_and_alerts(marts_url, ml_settings, make_config):
    from ml import step
    from moovitamix.step import RunContext

    weak = make_config("model.regularization=100000.0", "selection.max_challengers=0")
    ctx = RunContext(ml_settings, "20261126T000000Z-gggggg", marts_url, "http://api", True)
    report = step.train(ctx, weak)
    assert report.summary.startswith("baseline genre_popularity published (no model beat it)")
    assert (
        report.rows_out
        == report.details["rows_published"]["user_top_tracks"]
        + (report.details["rows_published"]["similar_tracks"])
    )
    assert [a.title for a in ctx.alerts] == [
        "no model beat the popularity baselines; published genre_popularity"
    ]
    assert ctx.facts["recommendations"]["source"] == "genre_popularity"
    # the run ledger stores the details as JSON, which has no NaN (a first day has no churn)
    json.dumps(report.details, allow_nan=False)

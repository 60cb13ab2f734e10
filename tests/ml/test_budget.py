"""The train step's time budget: which optional phases it gives up, in which order, and that
what it publishes stays complete (play next kept from an earlier run, new tracks filled)."""

from __future__ import annotations

import threading

import pytest

from ml import step
from ml.budget import CHURN, LISTS, PLAY_NEXT, READ, STAGE, TEST, StepBudget, Stopped
from ml.config import ConfigError, load_config
from ml.registry import finite_json
from ml.train import run_training
from moovitamix.step import RunContext
from moovitamix.warehouse import connect


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _all(url, query: str, params=()):
    with connect(url) as conn:
        return conn.execute(query, params).fetchall()


SIMILAR = (
    "select track_id, rank, similar_track_id, score, model_run_id, generated_at "
    "from recommendations.similar_tracks order by track_id, rank"
)
USERS = "select user_id, rank, track_id, score, source from recommendations.user_top_tracks"


# --- the budget alone -----------------------------------------------------------------------


def test_once_stopped_the_next_phase_raises_instead_of_starting() -> None:
    """The daily run stops training that started beside its build when the run fails."""
    stop = threading.Event()
    budget = StepBudget(0, clock=Clock(), stop=stop)
    with budget.timed(READ):
        stop.set()  # the phase under way finishes
    stopped = pytest.raises(Stopped, match="stopped before test: the run failed beside training")
    with stopped, budget.timed(TEST):
        pytest.fail("a stopped budget starts no phase")
    assert list(budget.timings) == [READ]


def test_no_limit_fits_everything_and_leaves_the_search_alone() -> None:
    clock = Clock()
    budget = StepBudget(0.0, {PLAY_NEXT: 1e9}, clock=clock)
    clock.now = 1e6
    assert budget.fits(PLAY_NEXT, (LISTS, STAGE)) and budget.left_for_challengers() is None


def test_estimates_scale_the_recorded_times_by_todays_pace() -> None:
    clock = Clock()
    recorded = {READ: 10.0, TEST: 2.0, PLAY_NEXT: 50.0, LISTS: 10.0, CHURN: 8.0, STAGE: 10.0}
    budget = StepBudget(100.0, recorded, clock=clock)
    assert budget.pace() == 1.0  # nothing timed yet: as recorded
    with budget.timed(READ):
        clock.now = 20.0  # twice as slow as recorded today
    assert budget.pace() == 2.0
    assert budget.estimate([PLAY_NEXT, LISTS]) == 120.0
    # the search gets what is left once everything after it is set aside (2 x 80 s): nothing
    assert budget.left_for_challengers() == 0.0
    # play next (100 s) with lists and stage (40 s) after 20 s: over 100 s
    assert not budget.fits(PLAY_NEXT, (LISTS, STAGE))
    # churn (16 s) and stage (20 s): fits
    assert budget.fits(CHURN, (STAGE,))
    clock.now = 70.0
    assert not budget.fits(CHURN, (STAGE,))


def test_a_phase_never_recorded_runs_unless_the_budget_is_spent() -> None:
    clock = Clock()
    budget = StepBudget(10.0, {}, clock=clock)
    assert budget.fits(PLAY_NEXT, (LISTS, STAGE)) and budget.left_for_challengers() == 10.0
    clock.now = 10.5
    assert not budget.fits(CHURN, (STAGE,)) and budget.left_for_challengers() == 0.0


def test_the_setting_is_validated_and_overridable() -> None:
    assert load_config().train.time_budget_s > 0  # the daily run's default
    assert load_config(overrides=["train.time_budget_s=0"]).train.time_budget_s == 0
    with pytest.raises(ConfigError, match=r"train\.time_budget_s"):
        load_config(overrides=["train.time_budget_s=-1"])


# --- the step -------------------------------------------------------------------------------


@pytest.mark.integration
def test_over_budget_play_next_is_kept_whole_and_what_was_skipped_is_said(
    marts_url, ml_settings, make_config
) -> None:
    first = run_training(
        ml_settings, "20261126T000000Z-aaaaaa", config=make_config(), warehouse=marts_url
    )
    assert first.skipped == [] and "skipped" not in first.summary
    before = _all(marts_url, SIMILAR)
    # a track new since the lists were made: an artist's sixth, in a genre
    with connect(marts_url) as conn:
        conn.execute(
            "insert into marts.dim_tracks select 999999, artist_name from "
            "marts.dim_tracks order by track_id limit 1"
        )
        conn.execute(
            "insert into marts.bridge_track_genres select 999999, genre_id from "
            "marts.bridge_track_genres where track_id = (select min(track_id) from "
            "marts.dim_tracks) limit 1"
        )
    tiny = make_config("train.time_budget_s=0.000001")
    ctx = RunContext(ml_settings, "20261127T000000Z-bbbbbb", marts_url, "http://api", True)
    report = step.train(ctx, tiny)
    serving = report.details["model_run_id"]
    kept = f"play next (kept from {first.serving_model_run_id}, 1 new track(s) filled)"
    challengers = [s for s in report.details["skipped"] if "challenger(s)" in s]
    assert report.details["skipped"] == [*challengers, kept, "churn"] and len(challengers) == 1
    assert report.details["challengers_passed_over"] > 0
    assert f"skipped: {', '.join(report.details['skipped'])}" in report.summary
    assert f"kept from {first.serving_model_run_id}" in report.details["play_next"]
    assert "churn" not in report.details["test"]
    assert "play next" not in report.details["timings_s"]  # never recorded as a refresh
    assert {"refit on all data", "build lists", "stage"} <= set(report.details["timings_s"])

    # the ledger says the same, and where play next came from
    (metrics,) = _all(
        marts_url, "select metrics from ml.model_runs where model_run_id = %s", (serving,)
    )[0]
    assert metrics["step"]["skipped"] == report.details["skipped"]
    assert metrics["step"]["time_budget_s"] == 0.000001
    assert metrics["test"]["play_next"]["kept_from"] == first.serving_model_run_id
    assert metrics["test"]["play_next"]["model"] == first.play_next

    # yesterday's play next, row for row (its model run and time), and the new track's list
    after = _all(marts_url, SIMILAR)
    assert [r for r in after if r[0] != 999999] == before
    new = [r for r in after if r[0] == 999999]
    k = tiny.publish.similar_k
    assert [r[1] for r in new] == list(range(1, k + 1)) and {r[4] for r in new} == {serving}
    n_catalog = _all(marts_url, "select count(*) from marts.dim_tracks")[0][0]
    assert len({r[0] for r in after}) == n_catalog
    # the users' lists are today's, complete
    n_users = _all(marts_url, "select count(*) from marts.dim_users")[0][0]
    users = _all(
        marts_url,
        "select count(*), count(distinct user_id), min(model_run_id), max(model_run_id) "
        "from recommendations.user_top_tracks",
    )[0]
    assert users == (n_users * tiny.publish.k, n_users, serving, serving)
    assert _all(marts_url, "select tablename from pg_tables where tablename like '%%__new'") == []

    # kept again: still the first run's play next (not the run that kept it)
    third = run_training(ml_settings, "20261128T000000Z-cccccc", config=tiny, warehouse=marts_url)
    assert f"play next (kept from {first.serving_model_run_id}, 0 new track(s) filled)" in (
        third.skipped
    )
    assert _all(marts_url, SIMILAR) == after

    # a clock that does not move: the same budget gives up no phase (the challengers' search,
    # timed by the fits' own clock, gets the budget's 1 microsecond)
    frozen = run_training(
        ml_settings,
        "20261129T000000Z-dddddd",
        config=tiny,
        warehouse=marts_url,
        clock=Clock(),
    )
    assert [s for s in frozen.skipped if "challenger(s)" not in s] == []
    assert "churn" in frozen.test["model"]
    refreshed = _all(marts_url, "select distinct model_run_id from recommendations.similar_tracks")
    assert refreshed == [(frozen.serving_model_run_id,)]


@pytest.mark.integration
def test_nothing_to_keep_play_next_runs_over_budget_all_the_same(
    marts_url, ml_settings, make_config
) -> None:
    tiny = make_config("train.time_budget_s=0.000001")
    result = run_training(ml_settings, "20261126T000000Z-aaaaaa", config=tiny, warehouse=marts_url)
    assert "churn" in result.skipped and not any("play next" in s for s in result.skipped)
    n_catalog = _all(marts_url, "select count(*) from marts.dim_tracks")[0][0]
    tracks = _all(marts_url, "select count(distinct track_id) from recommendations.similar_tracks")
    assert tracks == [(n_catalog,)]


def _reset(url) -> None:
    with connect(url) as conn:
        conn.execute("drop schema recommendations cascade")
        conn.execute("create schema recommendations")
        conn.execute("truncate ml.model_runs")


@pytest.mark.integration
def test_no_limit_and_a_budget_never_reached_publish_the_same(
    marts_url, ml_settings, make_config
) -> None:
    published = []
    for budget in ("0", "1000000"):
        config = make_config(f"train.time_budget_s={budget}", "selection.time_budget_s=600")
        result = run_training(
            ml_settings, "20261126T000000Z-aaaaaa", config=config, warehouse=marts_url
        )
        assert result.skipped == [] and result.passed_over == 0
        published.append(
            (
                sorted(_all(marts_url, USERS)),
                [r[:4] for r in _all(marts_url, SIMILAR)],
                finite_json(result.test),  # NaN (an empty segment) equals itself
                result.play_next,
            )
        )
        _reset(marts_url)
    assert published[0] == published[1]

"""Uptake on three simulated days: listeners who follow their published lists show in
marts.fct_recommendation_uptake.

Two simulators with the same seed, whose users follow the lists they were given with
probability 0.5 and 0; each is taken through three daily runs (`python -m orchestrator`, day 0,
1, 2). After each run the published recommendations.user_top_tracks are written to the
simulator's lists file for the next day (`--follow-lists`, simulator/follow.py), as if the app
showed them. Days 1 and 2 are measured against the lists of the run before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moovitamix.connection_url import ConnectionURL
from tests.conftest import SimulatorFactory, create_warehouse
from tests.e2e.daily_helpers import SIMULATOR_ARGS, daily_env, query, run_daily, set_simulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAYS = (0, 1, 2)


def give_lists(url: ConnectionURL, lists_file: Path, day: int) -> None:
    """The published lists, as the simulator's users will have them on `day`."""
    days = json.loads(lists_file.read_text()) if lists_file.exists() else {}
    rows = query(
        url,
        "select user_id, array_agg(track_id order by rank) "
        "from recommendations.user_top_tracks group by user_id",
    )
    days[str(day)] = {str(user): tracks for user, tracks in rows}
    lists_file.write_text(json.dumps(days))


def three_days(
    admin_url: ConnectionURL, start_simulator: SimulatorFactory, home: Path, p: float
) -> ConnectionURL:
    lists = home / "lists.json"
    api = start_simulator(*SIMULATOR_ARGS, "--follow-lists", str(lists), "--follow-p", str(p))
    warehouse = create_warehouse(admin_url, prefix="mvx_e2e_uptake")
    env = daily_env(
        api,
        {
            "WAREHOUSE_URL": warehouse.url(),
            "MOOVITAMIX_DATA_DIR": str(home / "data"),
            "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
        },
    )
    for day in DAYS:
        if day:
            give_lists(warehouse, lists, day)
            set_simulator(api, day=day)
        result = run_daily(env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return warehouse


def uptake_by_day(url: ConnectionURL) -> dict[str, tuple[int, int, int, int, str]]:
    """listen date -> (new tracks, published hits, served hits, baseline hits, the lists' run)."""
    rows = query(
        url,
        "select u.listen_date::text, sum(u.new_tracks)::int, sum(u.hits_published)::int,"
        " sum(u.hits_served)::int, sum(u.baseline_hits)::int, min(r.run_id)"
        " from marts.fct_recommendation_uptake as u"
        " join ml.model_runs as r using (model_run_id)"
        " group by u.listen_date order by 1",
    )
    return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


def run_ids(url: ConnectionURL) -> list[str]:
    return [r[0] for r in query(url, "select run_id from monitoring.pipeline_runs order by 1")]


def test_listeners_who_follow_their_lists_raise_the_uptake(
    admin_url: ConnectionURL, start_simulator: SimulatorFactory, tmp_path: Path
) -> None:
    measured = {}
    for p in (0.5, 0.0):
        warehouse = three_days(admin_url, start_simulator, tmp_path / f"p{p}", p)
        days = uptake_by_day(warehouse)
        # days 1 and 2 of the simulator (its day 0 is before any run), each against the lists
        # of the run of the day before
        assert list(days) == ["2026-01-01", "2026-01-02"], days
        assert [run for *_, run in days.values()] == run_ids(warehouse)[:2]
        new, published, served, baseline = (sum(d[i] for d in days.values()) for i in range(4))
        assert served == 0, "nothing was served: no API ran"
        measured[p] = (published / new, baseline / new, new)
        print(f"p={p}: uptake@10 {published}/{new} = {published / new:.3f}, "
              f"baseline {baseline}/{new} = {baseline / new:.3f}, by day {days}")  # fmt: skip
    following, alone = measured[0.5], measured[0.0]
    assert following[0] > alone[0] + 0.25, measured
    assert following[0] > 2 * following[1], measured
    assert following[2] > alone[2], "the followers' plays are new listens"

"""Uptake on three simulated days: listeners who follow their lists show in
marts.fct_recommendation_uptake.

Two simulators with the same seed, whose users follow the lists they were given with
probability 0.5 and 0; each is taken through three daily runs (`python -m orchestrator`, day 0,
1, 2). After each run, the lists the users will have the next day are written to the
simulator's lists file (`--follow-lists`, simulator/follow.py): with following, the lists the
serving API (`python -m serving`, real HTTP) returns for every user, so that its impressions are
logged too; without, the published recommendations.user_top_tracks read from the warehouse.
Days 1 and 2 are measured against the lists of the run before.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from moovitamix.connection_url import ConnectionURL
from tests.conftest import SimulatorFactory, create_warehouse
from tests.e2e.daily_helpers import (
    SIMULATOR_ARGS,
    daily_env,
    query,
    run_daily,
    scalar,
    set_simulator,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAYS = (0, 1, 2)
TOKEN = "uptake-test-token"
Lists = dict[str, list[int]]  # user id -> tracks, rank 1 first


def published_lists(url: ConnectionURL) -> Lists:
    rows = query(
        url,
        "select user_id, array_agg(track_id order by rank) "
        "from recommendations.user_top_tracks group by user_id",
    )
    return {str(user): tracks for user, tracks in rows}


@contextmanager
def serving(env: dict[str, str], root: Path) -> Iterator[Callable[[ConnectionURL], Lists]]:
    """`python -m serving` from `root` (the runs' project copy) on the run's warehouse and
    models (in the runs' data dir, from `env`); yields a function that waits until it serves
    the published run, asks it for every user's list and waits until its impressions are in."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port)],
        cwd=root, env={**env, "SERVING_TOKENS": TOKEN}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def serves(run: str) -> bool:
        assert process.poll() is None, "the API stopped"
        try:
            return httpx.get(f"{base}/health").json().get("lists_model_run_id") == run
        except (httpx.TransportError, ValueError):
            return False

    def served_lists(url: ConnectionURL) -> Lists:
        run = scalar(url, "select min(model_run_id) from recommendations.user_top_tracks")
        wait_for(lambda: serves(run), f"the API serving {run}", timeout_s=120)
        lists = {}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for user in published_lists(url):
                answer = client.get(f"/users/{user}/recommendations", params={"k": 10})
                answer.raise_for_status()
                lists[user] = [item["track_id"] for item in answer.json()["items"]]
        logged = (
            "select count(*) from monitoring.recommendation_impressions where model_run_id = %s"
        )
        wait_for(lambda: scalar(url, logged, (run,)) == len(lists), "the impressions", 60)
        return lists

    try:
        yield served_lists
    finally:
        process.terminate()
        process.wait(timeout=60)


def three_days(
    admin_url: ConnectionURL, start_simulator: SimulatorFactory, home: Path, p: float, root: Path
) -> ConnectionURL:
    lists_file = home / "lists.json"
    api = start_simulator(*SIMULATOR_ARGS, "--follow-lists", str(lists_file), "--follow-p", str(p))
    warehouse = create_warehouse(admin_url, prefix="mvx_e2e_uptake")
    env = daily_env(
        api,
        {
            "WAREHOUSE_URL": warehouse.url(),
            "MOOVITAMIX_DATA_DIR": str(home / "data"),
            "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
        },
    )
    lists_by_day: dict[str, Lists] = {}
    give: Callable[[ConnectionURL], Lists] = published_lists
    with ExitStack() as stack:
        for day in DAYS:
            if day:
                lists_by_day[str(day)] = give(warehouse)
                lists_file.write_text(json.dumps(lists_by_day))
                set_simulator(api, day=day)
            result = run_daily(env, root)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            if day == 0 and p:  # the API, once there are lists to serve
                give = stack.enter_context(serving(env, root))
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
    admin_url: ConnectionURL,
    start_simulator: SimulatorFactory,
    tmp_path: Path,
    project_copy: Path,
) -> None:
    measured = {}
    for p in (0.5, 0.0):
        warehouse = three_days(admin_url, start_simulator, tmp_path / f"p{p}", p, project_copy)
        days = uptake_by_day(warehouse)
        # days 1 and 2 of the simulator (its day 0 is before any run), each against the lists
        # of the run of the day before
        assert list(days) == ["2026-01-01", "2026-01-02"], days
        assert [run for *_, run in days.values()] == run_ids(warehouse)[:2]
        new, published, served, baseline = (sum(d[i] for d in days.values()) for i in range(4))
        # with following, the API served every user their published list; without, nothing
        assert served == (published if p else 0), days
        measured[p] = (published / new, baseline / new, new)
        print(f"p={p}: uptake@10 {published}/{new} = {published / new:.3f}, "
              f"served {served}/{new}, baseline {baseline}/{new} = {baseline / new:.3f}, "
              f"by day {days}")  # fmt: skip
    following, alone = measured[0.5], measured[0.0]
    assert following[0] > alone[0] + 0.25, measured
    assert following[0] > 2 * following[1], measured
    assert following[2] > alone[2], "the followers' plays are new listens"

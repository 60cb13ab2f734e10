"""Day by day: new, edited and deleted records; ids never reused; untouched records identical."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import orjson
import pytest

from simulator.evolve import World, build_world
from simulator.generate import WorldSpec
from simulator.launcher import running
from simulator.render import RENDERERS, view

SPEC = WorldSpec(seed=8, users=1000, tracks=800)
DAY0 = datetime(2026, 1, 1)
KEYS = {"tracks": "id", "users": "id", "listen_history": "user_id"}


def by_id(world: World, endpoint: str) -> dict[int, dict]:
    key = KEYS[endpoint]
    return {r[key]: r for r in RENDERERS[endpoint](world, view(world, endpoint))}


@pytest.fixture(scope="module")
def days() -> dict[int, dict[str, dict[int, dict]]]:
    return {
        day: {endpoint: by_id(build_world(SPEC, day), endpoint) for endpoint in KEYS}
        for day in range(6)
    }


@pytest.mark.parametrize("endpoint", ["tracks", "users"])
def test_day1_has_new_edited_and_deleted_records(days, endpoint: str) -> None:
    before, after = days[0][endpoint], days[1][endpoint]
    new = after.keys() - before.keys()
    deleted = before.keys() - after.keys()
    common = before.keys() & after.keys()
    edited = {i for i in common if before[i] != after[i]}
    assert 0.005 * len(before) <= len(new) <= 0.05 * len(before)
    assert 1 <= len(deleted) <= 0.02 * len(before)
    assert 1 <= len(edited) <= 0.03 * len(before)
    window = (DAY0, DAY0 + timedelta(days=1))
    for i in edited:
        changed = {k for k in before[i] if before[i][k] != after[i][k]}
        assert "updated_at" in changed
        assert len(changed) == 2, changed  # one field, and updated_at
        assert window[0] <= datetime.fromisoformat(after[i]["updated_at"]) < window[1]
        assert after[i]["created_at"] == before[i]["created_at"]
    for i in new:
        created = datetime.fromisoformat(after[i]["created_at"])
        assert window[0] <= created < window[1]
        assert after[i]["updated_at"] >= after[i]["created_at"]


def test_unchanged_records_are_byte_identical(days) -> None:
    for endpoint in KEYS:
        before, after = days[0][endpoint], days[1][endpoint]
        same = [i for i in before.keys() & after.keys() if before[i] == after[i]]
        assert len(same) > 0.8 * len(before)
        for i in same:
            assert orjson.dumps(before[i]) == orjson.dumps(after[i])


def test_histories_grow_and_follow_their_users(days) -> None:
    for day in range(1, 6):
        before, after = days[day - 1]["listen_history"], days[day]["listen_history"]
        assert after.keys() == days[day]["users"].keys()  # a deleted user's history goes too
        grown = 0
        for user_id in before.keys() & after.keys():
            old, new = before[user_id], after[user_id]
            assert new["items"][: len(old["items"])] == old["items"]  # appended, never rewritten
            if len(new["items"]) > len(old["items"]):
                grown += 1
                assert new["updated_at"] > old["updated_at"]
                assert new["updated_at"] >= new["created_at"]
                assert new["created_at"] == old["created_at"]
            else:
                assert new == old
        assert grown > 0.05 * len(before)
        for user_id in after.keys() - before.keys():  # new users start listening at once
            assert after[user_id]["items"]


def test_ids_are_never_reused(days) -> None:
    for endpoint in ("tracks", "users"):
        seen: set[int] = set()
        gone: set[int] = set()
        for day in range(6):
            ids = set(days[day][endpoint])
            assert not ids & gone, f"{endpoint}: a deleted id came back on day {day}"
            if day:
                gone |= set(days[day - 1][endpoint]) - ids
            new = ids - seen
            assert not new & gone
            seen |= ids


def test_new_listens_point_to_tracks_that_existed(days) -> None:
    for day in range(1, 6):
        known = set().union(*(days[d]["tracks"] for d in range(day + 1)))
        for history in days[day]["listen_history"].values():
            assert set(history["items"]) <= known


def test_timestamps_stay_before_the_snapshot(days) -> None:
    for day in range(6):
        snapshot = DAY0 + timedelta(days=day)
        for endpoint in KEYS:
            for record in days[day][endpoint].values():
                assert datetime.fromisoformat(record["updated_at"]) < snapshot


def test_day_n_is_reproducible_and_independent_of_how_it_is_reached() -> None:
    direct = build_world(SPEC, 4)
    again = build_world(SPEC, 4)
    assert direct.events == again.events
    for endpoint in KEYS:
        assert by_id(direct, endpoint) == by_id(again, endpoint)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running(["--seed", "8", "--users", "1000", "--tracks", "800", "--day", "1"]) as sim:
        assert sim.url is not None
        yield sim.url


def test_admin_endpoint_moves_the_served_day(server: str, days) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:
        state = client.get("/_admin/state").json()
        assert state["day"] == 1
        assert client.get("/users").json()["total"] == len(days[1]["users"])
        state = client.post("/_admin/state", json={"day": 3}).json()
        assert state["day"] == 3
        assert state["totals"]["users"] == len(days[3]["users"])
        body = client.get("/tracks", params={"size": 100}).json()
        assert body["total"] == len(days[3]["tracks"])
        first = body["items"][0]
        assert days[3]["tracks"][first["id"]] == first
        assert client.post("/_admin/state", json={"day": -1}).status_code == 422

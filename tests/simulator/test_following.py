"""Listeners who follow their lists (`--follow-lists`, simulator/follow.py): off, the worlds are
byte-identical to the default; on, followers play tracks of their own list, on that day."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.cli import parse_args
from simulator.evolve import World, build_world
from simulator.follow import Following
from simulator.generate import WorldSpec
from simulator.render import RENDERERS, view

SPEC = WorldSpec(seed=3, users=300, tracks=150)
ENDPOINTS = ("tracks", "users", "listen_history")


def rendered(world: World) -> dict[str, list[dict]]:
    return {e: RENDERERS[e](world, view(world, e)) for e in ENDPOINTS}


def histories(world: World) -> dict[int, list[int]]:
    return {h["user_id"]: h["items"] for h in rendered(world)["listen_history"]}


@pytest.fixture(scope="module")
def lists_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Day 2's lists: five tracks per user of day 1, the first of them a deleted track id."""
    world = build_world(SPEC, 1)
    tracks = [int(t) for t in world.tracks["id"][world.track_view]]
    users = [int(u) for u in world.users["id"][world.user_view]]
    lists = {str(u): [999_999_999, *tracks[n % 100 : n % 100 + 4]] for n, u in enumerate(users)}
    path = tmp_path_factory.mktemp("follow") / "lists.json"
    path.write_text(json.dumps({"2": lists}))
    return path


def test_without_lists_or_with_p_0_the_world_is_the_default(lists_file: Path) -> None:
    default = rendered(build_world(SPEC, 2))
    assert rendered(build_world(SPEC, 2, Following(lists_file, 0.0))) == default
    assert rendered(build_world(SPEC, 2, Following(lists_file.with_name("none.json")))) == default
    # the lists are day 2's: day 1 is untouched
    assert rendered(build_world(SPEC, 1, Following(lists_file, 1.0))) == rendered(
        build_world(SPEC, 1)
    )


def test_followers_play_their_own_list_on_its_day(lists_file: Path) -> None:
    lists = {int(u): tracks for u, tracks in json.loads(lists_file.read_text())["2"].items()}
    before = histories(build_world(SPEC, 2))
    counts = {}
    for p in (1.0, 0.5):
        world = build_world(SPEC, 2, Following(lists_file, p))
        after = histories(world)
        followed = {u for u in lists if after.get(u) != before.get(u)}
        for user in followed:
            played = after[user][len(before[user]) :]
            assert played and set(played) <= set(lists[user][1:]), "only live tracks of the list"
            assert len(set(played)) == len(played)
        counts[p] = len(followed)
        assert world.events["followed_lists"] == len(followed)
    assert counts[1.0] == len(before.keys() & lists.keys())
    assert 0.35 * counts[1.0] < counts[0.5] < 0.65 * counts[1.0]
    again = histories(build_world(SPEC, 2, Following(lists_file, 0.5)))
    assert again == histories(world), "seeded"


def test_the_cli_takes_a_probability_between_0_and_1(tmp_path: Path) -> None:
    args = parse_args(["--follow-lists", str(tmp_path / "l.json"), "--follow-p", "0.25"])
    assert (args.follow_lists, args.follow_p) == (tmp_path / "l.json", 0.25)
    assert parse_args([]).follow_lists is None
    with pytest.raises(SystemExit):
        parse_args(["--follow-lists", "l.json", "--follow-p", "1.5"])

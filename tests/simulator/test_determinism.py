"""Same seed, same bytes: across restarts of the process, and in-process generation."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from simulator.evolve import build_world
from simulator.generate import WorldSpec
from simulator.ids import id_upper_bound
from simulator.launcher import SimulatorProcess
from simulator.state import render_page

ENDPOINTS = ("tracks", "users", "listen_history")
ARGS = ["--users", "300", "--tracks", "200", "--day", "2"]
PAGES = [(1, 100), (2, 100), (4, 100), (3, 7), (50, 1)]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Two processes with seed 5, started side by side."""
    procs = {
        "a": SimulatorProcess(["--seed", "5", *ARGS]),
        "b": SimulatorProcess(["--seed", "5", *ARGS]),
    }
    try:
        yield {name: proc.wait_ready() for name, proc in procs.items()}
    finally:
        for proc in procs.values():  # signal both first: they shut down side by side
            proc.proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.stop()


def fetch(url: str) -> dict[tuple[str, int, int], bytes]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return {
            (endpoint, page, size): client.get(
                f"/{endpoint}", params={"page": page, "size": size}
            ).content
            for endpoint in ENDPOINTS
            for page, size in PAGES
        }


def test_same_seed_serves_identical_bytes_after_a_restart(servers: dict[str, str]) -> None:
    first, second = fetch(servers["a"]), fetch(servers["b"])
    assert first == second
    assert all(b'"items":[{' in body for (_, page, _), body in first.items() if page < 4)


def test_openapi_is_the_same_after_a_restart(servers: dict[str, str]) -> None:
    specs = [httpx.get(f"{servers[name]}/openapi.json").content for name in ("a", "b")]
    assert specs[0] == specs[1]


@pytest.mark.parametrize("profile", ["realistic", "reference"])
def test_another_seed_gives_other_data(profile: str) -> None:
    one = build_world(WorldSpec(seed=5, profile=profile, users=300, tracks=200), day=2)
    other = build_world(WorldSpec(seed=6, profile=profile, users=300, tracks=200), day=2)
    for endpoint in ENDPOINTS:
        for page, size in PAGES:
            body = render_page(one, endpoint, page, size)
            if b'"items":[]' not in body:
                assert body != render_page(other, endpoint, page, size), (endpoint, page)


@pytest.mark.parametrize("profile", ["realistic", "reference"])
def test_generation_is_a_function_of_the_spec(profile: str) -> None:
    spec = WorldSpec(seed=9, profile=profile, users=500, tracks=300)
    one, two = build_world(spec, day=3), build_world(spec, day=3)
    for name in ("id", "created", "updated", "preferred", "alive"):
        assert np.array_equal(one.users[name], two.users[name])
    for name in ("id", "genre_label", "duration", "alive"):
        assert np.array_equal(one.tracks[name], two.tracks[name])
    assert np.array_equal(one.listens.offsets, two.listens.offsets)
    assert np.array_equal(one.listens.items, two.listens.items)
    for endpoint in ENDPOINTS:
        assert render_page(one, endpoint, 2, 100) == render_page(two, endpoint, 2, 100)


def test_ids_are_unique_per_entity() -> None:
    world = build_world(WorldSpec(seed=4, users=3000, tracks=2000), day=5)
    for table in (world.users, world.tracks):
        ids = table["id"]
        assert len(np.unique(ids)) == len(ids)
        assert ids.min() >= 1
        assert ids.max() <= id_upper_bound(3000)  # 100 x the day-0 size, above 100000

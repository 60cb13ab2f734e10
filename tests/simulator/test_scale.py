"""Generation is vectorised: 200k users in a few seconds (the 1M case is in bench/)."""

from __future__ import annotations

import time

import numpy as np

from simulator.evolve import build_world
from simulator.generate import WorldSpec
from simulator.pools import build_pools
from simulator.state import render_page

USERS, TRACKS = 200_000, 40_000


def test_200k_users_generate_quickly_into_flat_arrays() -> None:
    build_pools(1)  # Faker's pools are a fixed cost, not a per-record one
    started = time.perf_counter()
    world = build_world(WorldSpec(seed=1, users=USERS, tracks=TRACKS), day=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"{elapsed:.1f}s for {USERS} users: not vectorised?"

    csr = world.listens
    assert csr.offsets.dtype == np.int64
    assert csr.items.dtype == np.int32
    assert len(csr.offsets) == world.users.n + 1
    assert world.users.n > USERS  # day 1 added users
    assert 15 * USERS < len(csr.items) < 25 * USERS
    ids = world.users["id"]
    assert len(np.unique(ids)) == len(ids)
    assert ids.max() > 100_000  # a wider id range at this scale

    started = time.perf_counter()
    for endpoint, rows in (("tracks", TRACKS), ("users", USERS), ("listen_history", USERS)):
        body = render_page(world, endpoint, rows // 200, 100)  # a page in the middle
        assert body.count(b'"created_at"') == 100
    assert time.perf_counter() - started < 0.5

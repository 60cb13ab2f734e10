"""Generation is vectorised: 200k users into flat arrays, and a page renders from its own rows
only. How fast is a benchmark's question, not a test's: bench/bench_simulator.py checks the
budgets (generation seconds per 100k users, milliseconds per page)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import render
from simulator.evolve import build_world
from simulator.generate import WorldSpec
from simulator.state import render_page

USERS, TRACKS = 200_000, 40_000


def test_200k_users_generate_into_flat_arrays_and_a_page_renders_its_rows_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(WorldSpec(seed=1, users=USERS, tracks=TRACKS), day=1)

    csr = world.listens
    assert csr.offsets.dtype == np.int64
    assert csr.items.dtype == np.int32
    assert len(csr.offsets) == world.users.n + 1
    assert world.users.n > USERS  # day 1 added users
    assert 15 * USERS < len(csr.items) < 25 * USERS
    ids = world.users["id"]
    assert len(np.unique(ids)) == len(ids)
    assert ids.max() > 100_000  # a wider id range at this scale

    rendered: list[int] = []  # rows handed to the per-record renderer, per page

    def counting(renderer):  # type: ignore[no-untyped-def]
        def wrapped(world, rows):  # type: ignore[no-untyped-def]
            rendered.append(len(rows))
            return renderer(world, rows)

        return wrapped

    for endpoint, renderer in list(render.RENDERERS.items()):
        monkeypatch.setitem(render.RENDERERS, endpoint, counting(renderer))
    for endpoint, rows in (("tracks", TRACKS), ("users", USERS), ("listen_history", USERS)):
        body = render_page(world, endpoint, rows // 200, 100)  # a page in the middle
        assert body.count(b'"created_at"') == 100
    assert rendered == [100, 100, 100], "only the page's rows reach the Python renderer"

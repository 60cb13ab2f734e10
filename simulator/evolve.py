"""Day-by-day evolution: the world of day N, computed from (seed, profile, sizes, N) alone.

Day 0 is simulator.generate's output. Each later day d applies, with a random stream of its own:
deletions (a deleted user's history goes too; ids are never reused), edits (one field changes
and `updated_at` moves into day d), new tracks and users (with ids never seen before), and new
listens appended to some histories (their `updated_at` moves). Rows that nothing touched keep
every value, so they render byte-identical from one day to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator import clock
from simulator.follow import Following, follow_lists
from simulator.generate import (
    Stream,
    WorldBuilder,
    WorldSpec,
    distinct_genres,
    draw_listens,
    generate_initial,
    new_tracks,
    new_users,
    sampler_for,
)
from simulator.listens import Csr
from simulator.pools import Pools
from simulator.table import Table
from simulator.vocabulary import EMAIL_DOMAINS, GENDERS, GENRES


@dataclass(frozen=True)
class DailyRates:
    """Shares applied each day (new rows: of the day-0 size; the rest: of the live rows)."""

    new_users: float = 0.02
    new_tracks: float = 0.01
    edited_users: float = 0.01
    edited_tracks: float = 0.005
    deleted_users: float = 0.003
    deleted_tracks: float = 0.002
    grown_histories: float = 0.10
    listens_per_growth: float = 2.0  # 1 + Poisson(this) new listens for a grown history
    listens_of_new_user: float = 4.0  # 1 + Poisson(this)


RATES = DailyRates()
Window = tuple[int, int]  # [start, end) in microseconds


@dataclass
class World:
    """One day's data, read-only once built."""

    spec: WorldSpec
    day: int
    pools: Pools
    users: Table
    tracks: Table
    labels: list[str]
    listens: Csr
    events: dict[str, int] = field(default_factory=dict)
    user_view: np.ndarray = field(init=False)  # live user rows in serving order
    track_view: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.user_view = np.flatnonzero(self.users["alive"])
        self.track_view = np.flatnonzero(self.tracks["alive"])


def _at_least_one(count: float) -> int:
    return max(1, round(count))


def daily_new_counts(spec: WorldSpec, day: int) -> tuple[int, int]:
    """How many users and tracks day `day` adds (known before building, to size the tables)."""
    rng = spec.rng(Stream.COUNTS, day)
    users = max(1, int(rng.binomial(spec.users, RATES.new_users)))
    tracks = max(1, int(rng.binomial(spec.tracks, RATES.new_tracks)))
    return users, tracks


def _unique_in_order(values: np.ndarray) -> np.ndarray:
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def pick_live(rng: np.random.Generator, alive: np.ndarray, upto: int, k: int) -> np.ndarray:
    """k distinct live rows among the first `upto` (fewer if there are not that many)."""
    candidates = alive[:upto]
    available = int(np.count_nonzero(candidates))
    k = min(k, available)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if 4 * k > available:
        return np.sort(rng.choice(np.flatnonzero(candidates), size=k, replace=False))
    picked = np.empty(0, dtype=np.int64)
    while len(picked) < k:
        drawn = rng.integers(0, upto, 2 * (k - len(picked)) + 8)
        picked = _unique_in_order(np.concatenate([picked, drawn[candidates[drawn]]]))
    return np.sort(picked[:k])


def pick_share(rng: np.random.Generator, alive: np.ndarray, upto: int, rate: float) -> np.ndarray:
    """About `rate` of the live rows (at least one) among the first `upto`."""
    return pick_live(rng, alive, upto, _at_least_one(np.count_nonzero(alive) * rate))


def _edit_users(
    b: WorldBuilder, rng: np.random.Generator, rows: np.ndarray, window: Window
) -> None:
    u = b.users
    which = rng.integers(0, 4, len(rows))
    r = rows[which == 0]  # last name
    n_last = len(b.pools.last_names)
    u["last"][r] = (u["last"][r] + rng.integers(1, n_last, len(r))) % n_last
    r = rows[which == 1]  # e-mail: another domain
    n_dom = len(EMAIL_DOMAINS)
    u["email_domain"][r] = (u["email_domain"][r] + rng.integers(1, n_dom, len(r))) % n_dom
    r = rows[which == 2]  # gender
    u["gender"][r] = (u["gender"][r] + rng.integers(1, len(GENDERS), len(r))) % len(GENDERS)
    r = rows[which == 3]  # favorite genre (the user's first taste)
    pref = u["preferred"][r]
    old = pref[:, 0].copy()
    new = ((old + rng.integers(1, len(GENRES), len(r))) % len(GENRES)).astype(np.int8)
    for col in (1, 2):  # a taste that becomes the favorite swaps places with the old favorite
        clash = pref[:, col] == new
        pref[clash, col] = old[clash]
    pref[:, 0] = new
    u["preferred"][r] = pref
    u["updated"][rows] = clock.in_range(rng, *window, len(rows))


def _edit_tracks(
    b: WorldBuilder, rng: np.random.Generator, rows: np.ndarray, window: Window
) -> None:
    t = b.tracks
    which = rng.integers(0, 4, len(rows))
    n_words = len(b.pools.words)
    for col, code in (("name", 0), ("album", 1)):
        r = rows[which == code]
        t[col][r] = (t[col][r] + rng.integers(1, n_words, len(r))) % n_words
    r = rows[which == 2]  # genres
    if b.spec.realistic:
        g1 = distinct_genres(rng, [t["g1"][r], t["g2"][r]], len(r))
        t["g1"][r] = g1
        t["genre_label"][r] = b.labels.canonical(g1, t["g2"][r])
    else:
        t["genre_label"][r] = (t["genre_label"][r] + rng.integers(1, n_words, len(r))) % n_words
    r = rows[which == 3]  # duration
    t["duration"][r] = (t["duration"][r].astype(np.int64) + rng.integers(1, 120, len(r))) % 3600
    t["updated"][rows] = clock.in_range(rng, *window, len(rows))


def _count(b: WorldBuilder, name: str, n: int) -> None:
    b.events[name] = b.events.get(name, 0) + n


def apply_day(
    b: WorldBuilder,
    day: int,
    n_new_users: int,
    n_new_tracks: int,
    following: Following | None = None,
) -> None:
    """Turn the world of day-1 into the world of `day` (listeners following their lists last)."""
    spec = b.spec
    rng = spec.rng(Stream.DAY, day)
    b.day = day
    window = clock.day_window(day)
    start = window[0]
    users_before, tracks_before = b.users.n, b.tracks.n

    t_alive = b.tracks["alive"]
    rows = pick_share(rng, t_alive, tracks_before, RATES.deleted_tracks)
    t_alive[rows] = False
    _count(b, "deleted_tracks", len(rows))
    u_alive = b.users["alive"]
    rows = pick_share(rng, u_alive, users_before, RATES.deleted_users)
    u_alive[rows] = False
    _count(b, "deleted_users", len(rows))

    rows = pick_share(rng, t_alive, tracks_before, RATES.edited_tracks)
    _edit_tracks(b, rng, rows, window)
    _count(b, "edited_tracks", len(rows))
    rows = pick_share(rng, u_alive, users_before, RATES.edited_users)
    _edit_users(b, rng, rows, window)
    _count(b, "edited_users", len(rows))

    created = clock.in_range(rng, start, start + clock.DAY_US * 9 // 10, n_new_tracks)
    new_tracks(b, rng, created, created.copy())
    _count(b, "new_tracks", n_new_tracks)

    # listens of the day go to tracks that existed (and still exist) before it
    eligible = np.flatnonzero(b.tracks["alive"][:tracks_before])
    if len(eligible) == 0:
        return
    sampler = sampler_for(b, eligible)
    rows = pick_share(rng, u_alive, users_before, RATES.grown_histories)
    counts = 1 + rng.poisson(RATES.listens_per_growth, len(rows))
    b.listens.append(rows, counts, draw_listens(b, rng, sampler, rows, counts))
    b.users["history_updated"][rows] = clock.in_range(rng, *window, len(rows))
    _count(b, "grown_histories", len(rows))

    created = clock.in_range(rng, start, start + clock.DAY_US * 9 // 10, n_new_users)
    first_listen = clock.with_microseconds(
        created + (rng.random(n_new_users) * clock.DAY_US / 20).astype(np.int64)
    )
    rows = new_users(b, rng, created, created.copy(), first_listen, first_listen.copy())
    counts = 1 + rng.poisson(RATES.listens_of_new_user, len(rows))
    b.listens.append(rows, counts, draw_listens(b, rng, sampler, rows, counts))
    _count(b, "new_users", n_new_users)
    if following is not None:
        follow_lists(b, following, users_before, tracks_before)


def build_world(spec: WorldSpec, day: int = 0, following: Following | None = None) -> World:
    """The world of day `day`: day 0, then every day's changes applied in order."""
    if day < 0:
        raise ValueError("day must be >= 0")
    added = [daily_new_counts(spec, d) for d in range(1, day + 1)]
    b = generate_initial(
        spec,
        user_capacity=spec.users + sum(u for u, _ in added),
        track_capacity=spec.tracks + sum(t for _, t in added),
    )
    for d, (n_users, n_tracks) in enumerate(added, start=1):
        apply_day(b, d, n_users, n_tracks, following)
    return World(
        spec=spec,
        day=day,
        pools=b.pools,
        users=b.users,
        tracks=b.tracks,
        labels=b.labels.labels,
        listens=b.listens.to_csr(b.users.n),
        events=dict(b.events),
    )

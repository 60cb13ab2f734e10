"""Realistic structure a recommender can learn beyond popularity: sessions, taste drift and
popularity waves. Each test compares the data with what independent draws would give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from simulator.evolve import World, build_world
from simulator.generate import WorldSpec
from simulator.render import RENDERERS

DAYS = (0, 10, 20, 30)


@pytest.fixture(scope="module")
def catalogue() -> dict[int, World]:
    """Many albums (two tracks rarely share one by chance) and genres that hold many tracks."""
    return {day: build_world(WorldSpec(seed=3, users=6000, tracks=10_000), day) for day in DAYS}


@pytest.fixture(scope="module")
def few_tracks() -> dict[int, World]:
    """Many listens per track, to follow each track's popularity."""
    return {day: build_world(WorldSpec(seed=3, users=6000, tracks=300), day) for day in DAYS}


def owners(world: World) -> np.ndarray:
    return np.repeat(np.arange(world.users.n), world.listens.counts())


def appended(before: World, after: World) -> tuple[np.ndarray, np.ndarray]:
    """(user row, track row) of the listens `after` has beyond `before`, in history order."""
    old = np.zeros(after.users.n, dtype=np.int64)
    old[: before.users.n] = before.listens.counts()
    owner = owners(after)
    position = np.arange(len(owner)) - after.listens.offsets[owner]
    keep = position >= old[owner]
    return owner[keep], after.listens.items[keep]


def consecutive(owner: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(track, next track) for every two consecutive listens of a user, and their user."""
    same = owner[1:] == owner[:-1]
    return np.stack([items[:-1][same], items[1:][same]]), owner[1:][same]


def shuffled_within_users(owner: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """The same histories, each in a random order: what independent draws would give."""
    return items[np.lexsort((np.random.default_rng(seed).random(len(owner)), owner))]


def album_of_tracks(world: World) -> np.ndarray:
    """An album number per track row, from the fields the API serves (artist and album)."""
    records = RENDERERS["tracks"](world, np.arange(world.tracks.n))
    return np.unique([f"{r['artist']}|{r['album']}" for r in records], return_inverse=True)[1]


def test_consecutive_listens_share_album_and_artist_far_more_than_by_chance(catalogue) -> None:
    world = catalogue[0]
    album = album_of_tracks(world)
    owner, items = owners(world), world.listens.items
    (first, second), _ = consecutive(owner, items)
    share = (album[first] == album[second]).mean()
    (first, second), _ = consecutive(owner, shuffled_within_users(owner, items, seed=1))
    chance = (album[first] == album[second]).mean()
    assert share > 0.3, share
    assert share > 2 * chance, (share, chance)


def next_hit_rate(owner: np.ndarray, items: np.ndarray, n_tracks: int) -> float:
    """The most frequent next track of each track, learned on the even users: how often it is
    the odd users' next track."""
    (first, second), user = consecutive(owner, items)
    train = (user % 2 == 0) & (first != second)
    pairs = sparse.csr_matrix(
        (np.ones(train.sum()), (first[train], second[train])), shape=(n_tracks, n_tracks)
    )
    predicted = np.asarray(pairs.argmax(axis=1)).ravel()
    test = user % 2 == 1
    return float((predicted[first[test]] == second[test]).mean())


def test_what_follows_what_is_learnable(catalogue) -> None:
    """Far better than on the same histories shuffled (same co-listening, no order)."""
    world = catalogue[0]
    owner, items = owners(world), world.listens.items
    real = next_hit_rate(owner, items, world.tracks.n)
    chance = next_hit_rate(owner, shuffled_within_users(owner, items, seed=2), world.tracks.n)
    assert real > 0.25, real
    assert real > 3 * chance, (real, chance)


def test_taste_drifts_away_from_the_favorite_genre(catalogue) -> None:
    """Users whose favorite genre stays the same play it less on days 21-30 than on days 1-10:
    far more than new, deleted and edited tracks alone move it."""
    tracks, users = catalogue[30].tracks, catalogue[30].users
    n = catalogue[0].users.n
    favorite = users["preferred"][:, 0]
    kept = np.zeros(users.n, dtype=bool)
    kept[:n] = favorite[:n] == catalogue[0].users["preferred"][:, 0]
    shares = []
    for before, after in ((0, 10), (20, 30)):
        owner, items = appended(catalogue[before], catalogue[after])
        owner, items = owner[kept[owner]], items[kept[owner]]
        in_favorite = (tracks["g1"][items] == favorite[owner]) | (
            tracks["g2"][items] == favorite[owner]
        )
        assert len(items) > 10_000
        shares.append(in_favorite.mean())
    assert shares[1] < shares[0] - 0.02, shares


def test_popularity_rises_and_falls_track_by_track(few_tracks) -> None:
    """Per track, the change in listens from days 1-10 to days 21-30, beyond its album's, is
    the same in two disjoint halves of the users: a property of the track, not noise."""
    n = few_tracks[0].tracks.n  # day-0 tracks, alive to the end: heard in both windows
    album = album_of_tracks(few_tracks[0])
    alive = few_tracks[30].tracks["alive"][:n]
    trend = []
    for half in (0, 1):
        counts = []
        for before, after in ((0, 10), (20, 30)):
            owner, items = appended(few_tracks[before], few_tracks[after])
            items = items[(owner % 2 == half) & (items < n)]
            counts.append(np.bincount(items, minlength=n) + 1.0)
        change = np.log(counts[1] / counts[1].sum()) - np.log(counts[0] / counts[0].sum())
        size = np.maximum(np.bincount(album[alive], minlength=album.max() + 1), 1)
        by_album = np.bincount(album[alive], change[alive], minlength=album.max() + 1) / size
        trend.append(change - by_album[album])
    followed = alive & (np.bincount(few_tracks[0].listens.items, minlength=n) >= 50)
    correlation = np.corrcoef(trend[0][followed], trend[1][followed])[0, 1]
    assert followed.sum() > 100
    assert correlation > 0.35, correlation

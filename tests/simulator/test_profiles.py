"""The two profiles: the reference server's quirks, and realistic structure for the pipeline."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pytest
from scipy import sparse

from simulator.evolve import World, build_world
from simulator.generate import WorldSpec
from simulator.render import RENDERERS, view
from simulator.vocabulary import GENRE_VARIANTS, GENRES

SEPARATORS = re.compile(r"\s*[,;/|]\s*")


def records(world: World, endpoint: str) -> list[dict]:
    return RENDERERS[endpoint](world, view(world, endpoint))


def parse_genres(label: str) -> list[str]:
    """What a downstream parser would do: split on any separator, map variant spellings."""
    canonical = {g.lower(): g for g in GENRES}
    for genre, variants in GENRE_VARIANTS.items():
        canonical.update({v.lower(): genre for v in variants})
    return [canonical[part.strip().lower()] for part in SEPARATORS.split(label)]


@pytest.fixture(scope="module")
def reference() -> World:
    return build_world(WorldSpec(seed=2, profile="reference", users=1000, tracks=1000))


@pytest.fixture(scope="module")
def realistic() -> World:
    return build_world(WorldSpec(seed=2, profile="realistic", users=3000, tracks=1500))


def test_reference_histories_have_five_items_one_per_user(reference: World) -> None:
    histories = records(reference, "listen_history")
    users = records(reference, "users")
    assert [h["user_id"] for h in histories] == [u["id"] for u in users]
    assert {len(h["items"]) for h in histories} == {5}
    track_ids = {t["id"] for t in records(reference, "tracks")}
    assert all(set(h["items"]) <= track_ids for h in histories)


def test_reference_genres_are_free_words_favorites_are_genres(reference: World) -> None:
    tracks, users = records(reference, "tracks"), records(reference, "users")
    genres = {t["genres"] for t in tracks}
    assert not genres & set(GENRES)
    assert all(re.fullmatch(r"[A-Za-z]+", g) for g in genres)  # one word each
    assert len(genres) > 300
    favorites = [u["favorite_genres"] for u in users]
    assert set(favorites) == set(GENRES)  # one of the 17, all of them used


def test_reference_timestamps_are_independent(reference: World) -> None:
    for endpoint in ("tracks", "users"):
        pairs = [(r["created_at"], r["updated_at"]) for r in records(reference, endpoint)]
        backwards = sum(updated < created for created, updated in pairs)
        assert 0.3 * len(pairs) < backwards < 0.7 * len(pairs), endpoint
    for history in records(reference, "listen_history"):
        assert history["updated_at"] >= history["created_at"]


def test_reference_ids_and_durations(reference: World) -> None:
    tracks = records(reference, "tracks")
    assert max(t["id"] for t in tracks) <= 100_000
    minutes = [int(t["duration"][:2]) for t in tracks]
    assert min(minutes) <= 2
    assert max(minutes) >= 57  # uniform over 00:00-59:59, like the reference


def test_realistic_genres_are_one_or_two_of_the_list(realistic: World) -> None:
    labels = [t["genres"] for t in records(realistic, "tracks")]
    parsed = [parse_genres(label) for label in labels]
    assert all(1 <= len(p) <= 2 and len(set(p)) == len(p) for p in parsed)
    assert {len(p) for p in parsed} == {1, 2}
    canonical = {", ".join(p) for p in parsed}
    odd = [label for label in labels if label not in canonical]
    assert 0.02 * len(labels) < len(odd) < 0.12 * len(labels)  # a small fraction is messy
    assert any(sep in label for label in odd for sep in (";", "/", "|"))
    assert any(label != label.title() and label.lower() == label for label in odd)


def test_realistic_users_and_timestamps(realistic: World) -> None:
    users = records(realistic, "users")
    assert all(u["favorite_genres"] in GENRES for u in users)
    for endpoint in ("tracks", "users", "listen_history"):
        for record in records(realistic, endpoint):
            created = datetime.fromisoformat(record["created_at"])
            assert datetime.fromisoformat(record["updated_at"]) >= created
            assert created < datetime(2026, 1, 1)
    preferred = realistic.users["preferred"]
    counts = (preferred >= 0).sum(axis=1)
    assert set(np.unique(counts)) == {1, 2, 3}


def test_realistic_listen_counts_are_long_tailed(realistic: World) -> None:
    counts = realistic.listens.counts()
    assert 15 <= counts.mean() <= 25
    assert np.median(counts) < counts.mean()
    assert counts.max() > 6 * counts.mean()
    assert counts.min() >= 1
    repeats = sum(
        len(set(h)) < len(h)
        for h in np.split(realistic.listens.items, realistic.listens.offsets[1:-1])
    )
    assert repeats > 0.2 * len(counts)


def test_realistic_popularity_is_long_tailed(realistic: World) -> None:
    plays = np.bincount(realistic.listens.items, minlength=realistic.tracks.n)
    top = np.sort(plays)[::-1]
    top_1pct = top[: max(1, len(top) // 100)].sum() / plays.sum()
    # 1% of the tracks get well over 1% of the listens (sessions spread some along albums)
    assert top_1pct > 0.06
    assert top[len(top) // 2 :].sum() / plays.sum() < 0.25  # half the catalogue: a long tail


def test_realistic_listens_follow_preferred_genres(realistic: World) -> None:
    """~80% of listens in the user's genres, far above what random listening would give."""
    users, tracks, csr = realistic.users, realistic.tracks, realistic.listens
    owner = np.repeat(np.arange(users.n), csr.counts())
    preferred = users["preferred"][owner]
    g1, g2 = tracks["g1"][csr.items], tracks["g2"][csr.items]
    hit = ((preferred == g1[:, None]) | ((preferred == g2[:, None]) & (g2[:, None] >= 0))).any(1)
    share = hit.mean()
    shuffled = np.random.default_rng(0).permutation(csr.items)
    g1, g2 = tracks["g1"][shuffled], tracks["g2"][shuffled]
    baseline = (preferred == g1[:, None]) | ((preferred == g2[:, None]) & (g2[:, None] >= 0))
    baseline_share = baseline.any(1).mean()
    assert share > 0.75
    assert share > 2 * baseline_share
    # the one genre the API shows (favorite_genres) carries the signal too
    favorite_hit = (
        (users["preferred"][owner, 0] == tracks["g1"][csr.items])
        | (users["preferred"][owner, 0] == tracks["g2"][csr.items])
    ).mean()
    assert favorite_hit > 0.4


def test_collaborative_filtering_beats_popularity(realistic: World) -> None:
    """Leave one listen out per user: item-item co-occurrence finds it more than top-popular."""
    csr, n_tracks = realistic.listens, realistic.tracks.n
    counts = csr.counts()
    rng = np.random.default_rng(1)
    held = csr.offsets[:-1] + (rng.random(len(counts)) * counts).astype(np.int64)
    keep = np.ones(len(csr.items), dtype=bool)
    keep[held[counts >= 5]] = False
    owner = np.repeat(np.arange(len(counts)), counts)
    train = sparse.csr_matrix(
        (np.ones(keep.sum()), (owner[keep], csr.items[keep])), shape=(len(counts), n_tracks)
    )
    train.data[:] = 1.0
    cooc = (train.T @ train).tocsr()
    cooc.setdiag(0)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    evaluated = np.flatnonzero(counts >= 5)[:1500]
    k = 20
    hits = {"cf": 0, "popular": 0}
    for user in evaluated:
        seen = train[user].indices
        target = csr.items[held[user]]
        if target in seen:
            continue
        scores = (train[user] @ cooc).toarray().ravel()
        pop = popularity.astype(float)
        scores[seen] = -1
        pop[seen] = -1
        hits["cf"] += target in np.argpartition(scores, -k)[-k:]
        hits["popular"] += target in np.argpartition(pop, -k)[-k:]
    assert hits["cf"] > 1.2 * hits["popular"], hits

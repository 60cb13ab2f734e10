import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.play_next import (
    BLEND,
    GENRE_POPULARITY,
    NO_GAP,
    SOURCES,
    TRANSITIONS,
    Config,
    Histories,
    PlayNext,
    PlayNextSettings,
    choose_play_next,
    fit_sequence_lists,
    hits,
    merge_lists,
    pair_counts,
    top_k_rows,
)
from ml.sequences import Sequences, TrackFeatures, build_sequences, track_features

K = 10
ARTIST, GENRE = SOURCES.index("artist"), SOURCES.index(GENRE_POPULARITY)


@dataclass(frozen=True)
class Planted:
    sequences: Sequences
    tracks: TrackFeatures
    n_cold: int  # the last n_cold catalog tracks are never played


def planted(
    *,
    n_users: int = 800,
    n_tracks: int = 300,
    length: int = 40,
    follow: float = 0.35,
    scenes: int = 6,
    n_cold: int = 20,
    seed: int = 3,
) -> Planted:
    """Users listen inside their scene (by popularity), hearing
    most of it; with probability `follow` the next track is the previous one's planted
    successor (in the same scene). Co-listening sees the whole scene about equally, only the
    order singles out the successor."""
    rng = np.random.default_rng(seed)
    played = n_tracks - n_cold
    scene = rng.integers(scenes, size=played)
    weight = np.empty(played)
    weight[rng.permutation(played)] = np.arange(1, played + 1) ** -0.8
    successor = np.empty(played, dtype=np.int64)
    for s in range(scenes):  # a cycle through each scene's tracks, in a random order
        members = rng.permutation(np.flatnonzero(scene == s))
        successor[members] = np.roll(members, -1)
    user_scene = rng.integers(scenes, size=n_users)

    def in_scene() -> np.ndarray:
        picks = np.empty(n_users, dtype=np.int64)
        for s in range(scenes):
            members = np.flatnonzero(scene == s)
            who = np.flatnonzero(user_scene == s)
            p = weight[members] / weight[members].sum()
            picks[who] = rng.choice(members, len(who), p=p)
        return picks

    cols = np.empty((n_users, length), dtype=np.int64)
    cols[:, 0] = in_scene()
    for j in range(1, length):
        follows = rng.random(n_users) < follow
        cols[:, j] = np.where(follows, successor[cols[:, j - 1]], in_scene())

    track_ids = np.sort(rng.choice(np.arange(1, n_tracks * 10), n_tracks, replace=False))
    user_ids = rng.choice(np.arange(1, n_users * 10), n_users, replace=False)
    positions = np.tile(np.arange(length), n_users)
    sequences = build_sequences(
        np.repeat(user_ids, length),
        positions,
        track_ids[cols.ravel()],
        1_767_225_600 + 180 * positions,
    )
    artists = pd.Series([f"artist {i % 60}" for i in range(n_tracks)])
    pair_tracks = np.r_[track_ids, track_ids[::3]]
    genres = pd.Series(
        [f"g{i % 8}" for i in range(n_tracks)] + [f"g{i % 5}" for i in range(0, n_tracks, 3)]
    )
    return Planted(sequences, track_features(track_ids, artists, pair_tracks, genres), n_cold)


def co_listening(counts: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """An ALS-like collaborative list: the tracks most users heard with it (the dot product
    of listener vectors: close and popular), itself excluded."""
    heard = (counts > 0).astype(np.float64)
    shared = (heard.T @ heard).toarray()
    np.fill_diagonal(shared, -np.inf)
    ids = np.argsort(-shared, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(shared, ids, 1)


def listeners_of(sequences: Sequences, track_ids: np.ndarray) -> np.ndarray:
    """Distinct listeners per catalog track, counted in Python (the oracle)."""
    who: dict[int, set[int]] = {}
    for user, track in zip(sequences.user_id.tolist(), sequences.track_id.tolist(), strict=True):
        who.setdefault(track, set()).add(user)
    return np.array([len(who.get(t, ())) for t in track_ids.tolist()])


SETTINGS = PlayNextSettings(k=K, bootstrap_samples=300)


@pytest.fixture(scope="module")
def structured() -> Planted:
    return planted()


@pytest.fixture(scope="module")
def structured_result(structured: Planted) -> PlayNext:
    return choose_play_next(
        structured.sequences, structured.tracks, SETTINGS, collaborative=co_listening
    )


def test_transitions_beat_popularity_and_co_listening_on_planted_sequences(
    structured_result: PlayNext,
) -> None:
    m = structured_result.metrics
    assert m["test_transitions_hit_vs_popularity_lo"] > 0
    assert m["test_transitions_hit_vs_collaborative_lo"] > 0
    assert m["test_transitions_mrr_vs_collaborative_lo"] > 0
    assert m["test_collaborative_hit_vs_popularity_lo"] > 0  # co-listening still learns scenes
    assert m["gate_passed"] == 1.0
    assert structured_result.model == structured_result.winner
    assert structured_result.model in (TRANSITIONS, "co_occurrence", BLEND)
    assert all(isinstance(v, float) for v in m.values())
    for family in ("transitions", "collaborative", "popularity", "genre_popularity"):
        lo, mean, hi = (m[f"test_{family}_hit{s}"] for s in ("_lo", "", "_hi"))
        assert 0 <= lo <= mean <= hi <= 1


def test_every_catalog_track_gets_k_distinct_next_tracks(
    structured: Planted, structured_result: PlayNext
) -> None:
    got = structured_result
    np.testing.assert_array_equal(got.track_ids, structured.tracks.track_ids)
    assert got.ids.shape == (len(got.track_ids), K)
    assert (got.ids >= 0).all()
    assert not (got.ids == got.track_ids[:, None]).any()
    ranked = np.sort(got.ids, axis=1)
    assert not (ranked[:, 1:] == ranked[:, :-1]).any()
    assert np.isin(got.ids, got.track_ids).all()


def test_cold_tracks_get_their_artists_most_played_then_genre_neighbours(
    structured: Planted, structured_result: PlayNext
) -> None:
    tracks, got = structured.tracks, structured_result
    listeners = listeners_of(structured.sequences, tracks.track_ids)
    genres = tracks.genres.toarray() > 0
    cold = range(len(tracks.track_ids) - structured.n_cold, len(tracks.track_ids))
    for row in cold:
        assert listeners[row] == 0
        mates = [
            j
            for j in range(len(tracks.track_ids))
            if tracks.artist[j] == tracks.artist[row] and j != row
        ]
        expected = sorted(mates, key=lambda j: (-listeners[j], j))[:K]
        n_artist = len(expected)
        np.testing.assert_array_equal(got.ids[row, :n_artist], tracks.track_ids[expected])
        assert (got.source[row, :n_artist] == ARTIST).all()
        rest = np.searchsorted(tracks.track_ids, got.ids[row, n_artist:])
        assert (got.source[row, n_artist:] == GENRE).all()
        assert (genres[rest] & genres[row]).any(axis=1).all()


def test_lists_align_to_the_track_ids_asked_for(structured: Planted) -> None:
    ids = structured.tracks.track_ids
    asked = np.array([ids[5], -42, ids[0]])
    got = choose_play_next(
        structured.sequences,
        structured.tracks,
        PlayNextSettings(k=3, bootstrap_samples=50),
        track_ids=asked,
    )
    np.testing.assert_array_equal(got.track_ids, asked)
    assert (got.ids[[0, 2]] >= 0).all() and (got.ids[1] == -1).all()
    assert not (got.ids[0] == ids[5]).any()


def test_the_gate_publishes_genre_popularity_when_sequences_carry_nothing() -> None:
    data = planted(follow=0.0, scenes=1, n_users=600, seed=8)
    got = choose_play_next(data.sequences, data.tracks, SETTINGS)
    assert got.metrics["gate_passed"] == 0.0
    assert got.metrics["gate_hit_diff_lo"] <= 0
    assert got.model == GENRE_POPULARITY and got.config == GENRE_POPULARITY
    assert np.isin(got.source, [GENRE, SOURCES.index("popularity")]).all()
    assert (got.ids >= 0).all()


# --- the pieces against brute force ---------------------------------------------------------


def test_test_metrics_match_a_brute_force_computation_on_a_tiny_case() -> None:
    histories = {  # user -> tracks in order
        1: [0, 1, 2, 1, 2],
        2: [3, 1, 2],
        3: [0, 1, 0, 1],
        4: [2, 3, 2, 4, 0, 3],
        5: [4, 1, 1],
        6: [1, 0],
    }
    users = [u for u, h in histories.items() for _ in h]
    positions = [p for h in histories.values() for p in range(len(h))]
    track_ids = np.array([10, 20, 30, 40, 50, 60])  # 60: never played
    listened = np.array([t for h in histories.values() for t in h])
    sequences = build_sequences(
        np.array(users), np.array(positions), track_ids[listened], np.zeros(len(users))
    )
    tracks = track_features(
        track_ids, pd.Series([None] * 6), np.array([], np.int64), pd.Series([], dtype="string")
    )
    k = 3
    got = choose_play_next(
        sequences, tracks, PlayNextSettings(k=k, dampings=(0.0,), bootstrap_samples=100)
    )

    train = {u: h[:-2] for u, h in histories.items()}  # fit blind to the last two listens
    listeners = [sum(t in h for h in train.values()) for t in range(6)]
    popular = sorted(range(6), key=lambda t: (-listeners[t], t))
    transitions = np.zeros((6, 6))
    for h in train.values():
        for a, b in itertools.pairwise(h):
            if a != b:
                transitions[a, b] += 1

    def ranked(seed: int, model: bool) -> list[int]:
        by_count = [
            b
            for b in sorted(range(6), key=lambda b: (-transitions[seed, b], b))
            if transitions[seed, b] > 0
        ]
        out = []
        for t in (by_count if model else []) + popular:
            if t != seed and t not in out:
                out.append(t)
        return out[:k]

    for family, model in (("popularity", False), ("transitions", True)):
        hit, rr = [], []
        for h in histories.values():
            seed, target = h[-2], h[-1]
            if seed == target:
                continue
            top = ranked(seed, model)
            hit.append(target in top)
            rr.append(1 / (top.index(target) + 1) if target in top else 0.0)
        assert got.metrics[f"test_{family}_hit"] == pytest.approx(np.mean(hit))
        assert got.metrics[f"test_{family}_mrr"] == pytest.approx(np.mean(rr))
    assert got.metrics["n_test_pairs"] == 5  # user 5 ends on a repeat


def test_hits_and_reciprocal_ranks() -> None:
    ids = np.array([[1, 2, 3], [0, 2, -1], [1, 0, 2]])
    hit, rr = hits(ids, seeds=np.array([0, 1, 2, 0]), targets=np.array([3, 2, 1, 0]), k=2)
    np.testing.assert_array_equal(hit, [0, 1, 1, 0])
    np.testing.assert_allclose(rr, [0, 0.5, 1, 0])


def _random_histories(seed: int, n_tracks: int = 7) -> Histories:
    rng = np.random.default_rng(seed)
    n = 60
    user = np.sort(rng.integers(0, 6, n))
    position = np.zeros(n, dtype=np.int64)
    for i in range(1, n):  # gaps where a listen of an unknown track was dropped
        position[i] = 0 if user[i] != user[i - 1] else position[i - 1] + rng.integers(1, 3)
    at = np.cumsum(rng.choice([0, 60, 4000], n))
    return Histories(user, position, rng.integers(0, n_tracks, n), at, n_tracks)


def test_pair_counts_match_a_loop_over_every_pair_of_listens() -> None:
    h = _random_histories(1)
    window, gap = 3, 3600
    expected = np.zeros((7, 7))
    transitions = np.zeros((7, 7))
    for i in range(len(h.user)):
        for j in range(i + 1, len(h.user)):
            same = h.user[i] == h.user[j] and h.col[i] != h.col[j]
            distance = h.position[j] - h.position[i]
            if same and distance <= window and h.at[j] - h.at[i] <= gap:
                expected[h.col[i], h.col[j]] += 1 / distance
                expected[h.col[j], h.col[i]] += 1 / distance
            if same and distance == 1:
                transitions[h.col[i], h.col[j]] += 1
    np.testing.assert_allclose(pair_counts(h, window, gap).toarray(), expected, rtol=1e-6)
    np.testing.assert_array_equal(pair_counts(h, 1, NO_GAP).toarray(), transitions)
    np.testing.assert_allclose(
        pair_counts(h, window, gap, 2, 5).toarray(), expected[2:5], rtol=1e-6
    )


def test_top_k_rows_is_exact_with_ties_to_the_lower_column() -> None:
    dense = np.array([[0, 3, 1, 3, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 5], [1, 1, 1, 1, 1]], float)
    ids, scores = top_k_rows(sp.csr_matrix(dense), 3)
    np.testing.assert_array_equal(ids, [[1, 3, 2], [-1, -1, -1], [4, 0, -1], [0, 1, 2]])
    np.testing.assert_array_equal(scores, [[3, 3, 1], [0, 0, 0], [5, 2, 0], [1, 1, 1]])


def test_fit_in_many_blocks_equals_one_block() -> None:
    h = _random_histories(2, n_tracks=9)
    configs = [
        Config(TRANSITIONS),
        Config(BLEND, 1.0, 0.25, 0.5, 0.5),
        Config("co_occurrence", 0.0, 1.0, 0.0, window=2),
    ]
    collaborative = np.tile(np.arange(9)[::-1], (9, 1))[:, :4]
    one = fit_sequence_lists(h, configs, PlayNextSettings(k=4), collaborative)
    many = fit_sequence_lists(h, configs, PlayNextSettings(k=4, pair_budget=10), collaborative)
    for config in configs:
        np.testing.assert_array_equal(one[config][0], many[config][0])
        np.testing.assert_allclose(one[config][1], many[config][1])


def test_the_blend_lists_collaborative_picks_where_no_transition_is_known() -> None:
    h = Histories(
        np.zeros(3, np.int64), np.arange(3), np.array([0, 1, 2]), np.zeros(3, np.int64), 5
    )
    collaborative = np.array([[3, 4], [4, 3], [0, 1], [0, 4], [2, -1]])
    lists = fit_sequence_lists(
        h, [Config(BLEND, 1.0, 0.0, 0.0, 0.5)], PlayNextSettings(k=2), collaborative
    )
    ids = next(iter(lists.values()))[0]
    np.testing.assert_array_equal(ids, [[1, 3], [2, 4], [0, 1], [0, 4], [2, -1]])


def test_merge_keeps_the_first_occurrence_of_each_id_in_order() -> None:
    ids, scores, source = merge_lists(
        [
            (np.array([[4, -1], [2, 2]]), np.array([[0.9, 0], [0.8, 0.7]]), 0),
            (np.array([[1, 4, 3], [5, 2, -1]]), np.full((2, 3), 0.1), 2),
        ],
        k=3,
    )
    np.testing.assert_array_equal(ids, [[4, 1, 3], [2, 5, -1]])
    np.testing.assert_allclose(scores, [[0.9, 0.1, 0.1], [0.8, 0.1, 0]])
    np.testing.assert_array_equal(source, [[0, 2, 2], [0, 2, -1]])


def test_a_catalog_without_listens_still_gets_genre_lists_and_finite_metrics() -> None:
    none = np.array([], dtype=np.int64)
    tracks = track_features(
        np.array([1, 2, 3]), pd.Series(["a", "a", None]), np.array([1, 3]), pd.Series(["x", "x"])
    )
    got = choose_play_next(build_sequences(none, none, none, none), tracks, PlayNextSettings(k=2))
    assert got.model == GENRE_POPULARITY and got.metrics["gate_passed"] == 0
    assert all(np.isfinite(v) for v in got.metrics.values())
    np.testing.assert_array_equal(got.ids[[0, 2], 0], [3, 1])  # tracks 1 and 3 share genre x
    assert (got.source[[0, 2], 0] == GENRE).all() and (got.ids >= 0).all()


def test_a_sample_of_histories_keeps_whole_histories_of_at_most_that_many_users() -> None:
    h = _random_histories(4)
    got = h.sampled(3, seed=1)
    assert len(np.unique(got.user)) == 3
    for user in np.unique(got.user):  # every listen of a chosen user, in order
        np.testing.assert_array_equal(got.col[got.user == user], h.col[h.user == user])
        np.testing.assert_array_equal(got.position[got.user == user], h.position[h.user == user])
    np.testing.assert_array_equal(h.sampled(3, seed=1).user, got.user)  # seeded
    assert h.sampled(0, seed=1) is h and h.sampled(6, seed=1) is h


def test_candidates_judged_on_a_sample_publish_the_same_lists_fit_on_everyone(
    structured: Planted, structured_result: PlayNext
) -> None:
    sampled = choose_play_next(
        structured.sequences,
        structured.tracks,
        PlayNextSettings(k=K, bootstrap_samples=300, max_fit_users=300),
        collaborative=co_listening,
    )
    assert (
        sampled.metrics["n_validation_pairs"]
        <= 300
        < structured_result.metrics["n_validation_pairs"]
    )
    # the same winner, refit on every history: the very lists of the unsampled choice
    assert sampled.config == structured_result.config
    np.testing.assert_array_equal(sampled.ids, structured_result.ids)
    np.testing.assert_array_equal(sampled.source, structured_result.source)


def test_counts_are_each_users_listens_per_track() -> None:
    h = _random_histories(5)
    expected = np.zeros((int(h.user.max()) + 1, h.n_tracks))
    for user, col in zip(h.user.tolist(), h.col.tolist(), strict=True):
        expected[user, col] += 1
    got = h.counts()
    np.testing.assert_array_equal(got.toarray(), expected)
    assert got.has_canonical_format  # sorted columns, one entry each
    np.testing.assert_array_equal(h.col, _random_histories(5).col)  # the histories untouched

"""Listen histories: how listens are drawn, and how they are stored (CSR-like arrays).

A history is a list of track rows per user row. It is kept as `offsets` (one more than the
number of users) and a flat `items` array: user row r listened to items[offsets[r]:offsets[r+1]].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.drift import Taste
from simulator.genre_labels import NO_GENRE
from simulator.hashing import splitmix64
from simulator.sessions import follow_sessions, session_starts, successors
from simulator.vocabulary import GENRES

# Realistic profile: the share of listens drawn from the user's preferred genres; the rest
# follows global popularity.
PREFERRED_SHARE = 0.8
# Which preferred genre a preferred listen uses, by number of preferred genres (1, 2 or 3):
# cumulative shares of the first, second and third genre.
_POSITION_CUTS = np.array(
    [
        [2.0, 2.0],  # 0 preferred genres (unused)
        [2.0, 2.0],  # 1: always the first
        [0.7, 2.0],  # 2: 70% first, 30% second
        [0.6, 0.85],  # 3: 60% / 25% / 15%
    ]
)
# Taste inside a genre that only co-listening reveals: each genre's tracks fall into SCENES
# scenes, each user follows one scene per preferred genre, and SCENE_SHARE of their listens in
# that genre come from it. Without it, "popularity within the favorite genre" is as good a
# recommender as the data allows, and collaborative filtering has nothing to learn.
SCENES = 4
SCENE_SHARE = 0.7
_USERS_PER_CHUNK = 250_000


def _mix(keys: np.ndarray, salt: int) -> np.ndarray:
    return splitmix64(keys.astype(np.uint64) + np.uint64(salt))


def track_scene(album_rows: np.ndarray) -> np.ndarray:
    """The scene of tracks, by the row opening their album: an album stays in one scene."""
    return (_mix(album_rows, 0x5CE4E) % np.uint64(SCENES)).astype(np.int64)


def user_scene(user_rows: np.ndarray, genres: np.ndarray) -> np.ndarray:
    keys = user_rows.astype(np.uint64) * np.uint64(len(GENRES)) + genres.astype(np.uint64)
    return (_mix(keys, 0x05E7) % np.uint64(SCENES)).astype(np.int64)


@dataclass
class Csr:
    offsets: np.ndarray  # int64, len n_users + 1
    items: np.ndarray  # int32 track rows

    def row(self, user_row: int) -> np.ndarray:
        return self.items[self.offsets[user_row] : self.offsets[user_row + 1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def csr_from_counts(counts: np.ndarray, items: np.ndarray) -> Csr:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Csr(offsets, items.astype(np.int32, copy=False))


@dataclass
class ListenLog:
    """The day-0 histories plus the listens appended day by day, merged once at the end."""

    base: Csr
    # (user rows, listens per user, items grouped by user in that order), one per event
    appended: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def append(self, user_rows: np.ndarray, counts: np.ndarray, items: np.ndarray) -> None:
        if len(user_rows):
            self.appended.append((user_rows, counts, items))

    def to_csr(self, n_users: int) -> Csr:
        base_counts = self.base.counts()
        if not self.appended and len(base_counts) == n_users:
            return self.base
        counts = np.zeros(n_users, dtype=np.int64)
        counts[: len(base_counts)] = base_counts
        for rows, added, _ in self.appended:
            counts[rows] += added  # rows are distinct within one event
        out = csr_from_counts(counts, np.empty(int(counts.sum()), dtype=np.int32))
        # base histories keep their order, each shifted to its user's new start
        shift = out.offsets[: len(base_counts)] - self.base.offsets[:-1]
        positions = np.arange(len(self.base.items), dtype=np.int64)
        positions += np.repeat(shift, base_counts)
        out.items[positions] = self.base.items
        fill = out.offsets[:-1].copy()
        fill[: len(base_counts)] += base_counts
        for rows, added, items in self.appended:
            starts = np.zeros(len(added), dtype=np.int64)
            np.cumsum(added[:-1], out=starts[1:])
            rank = np.arange(len(items), dtype=np.int64) - np.repeat(starts, added)
            out.items[np.repeat(fill[rows], added) + rank] = items
            fill[rows] += added
        return out


class CumulativeIndex:
    """Inverse-CDF sampling over cumulative weights, with a guide table (Chen's indexed search).

    `find(t)` is the first i with cum[i] > t, like np.searchsorted(cum, t, "right"), but each
    lookup starts from a precomputed bucket and walks a step or two instead of a binary search:
    several times faster for the tens of millions of listens a million users make.
    """

    def __init__(self, cum: np.ndarray, buckets_per_item: int = 4) -> None:
        self.cum = cum
        self.total = float(cum[-1]) if len(cum) else 0.0
        self.buckets = max(1, buckets_per_item * len(cum))
        edges = np.arange(self.buckets, dtype=np.float64) * (self.total / self.buckets)
        self.guide = np.searchsorted(cum, edges, side="right")

    def find(self, targets: np.ndarray) -> np.ndarray:
        last = len(self.cum) - 1
        bucket = (targets * (self.buckets / self.total)).astype(np.int64)
        np.clip(bucket, 0, self.buckets - 1, out=bucket)
        found = np.minimum(self.guide[bucket], last)
        todo = np.flatnonzero((found < last) & (self.cum[found] <= targets))
        while todo.size:
            found[todo] += 1
            keep = (found[todo] < last) & (self.cum[found[todo]] <= targets[todo])
            todo = todo[keep]
        return found


class ListenSampler:
    """Draws listened tracks among `eligible` track rows.

    Realistic: listening sessions (simulator.sessions) whose first tracks come, for
    PREFERRED_SHARE of them, from one of the user's preferred genres (or, as taste drifts, the
    genre they move to), weighted by popularity inside the genre (SCENE_SHARE of those inside
    the user's scene of that genre); the rest from global popularity.
    """

    def __init__(
        self,
        eligible: np.ndarray,
        g1: np.ndarray,
        g2: np.ndarray,
        popularity: np.ndarray,
        album: np.ndarray,
    ) -> None:
        self.rows = eligible.astype(np.int32)
        weights = popularity[eligible].astype(np.float64)
        self.cum = np.cumsum(weights)
        # (genre, track) memberships sorted by genre, with cumulative popularity
        has_second = g2[eligible] != NO_GENRE
        genre = np.concatenate([g1[eligible], g2[eligible][has_second]]).astype(np.int64)
        member = np.concatenate([self.rows, self.rows[has_second]])
        member_w = np.concatenate([weights, weights[has_second]])
        order = np.argsort(genre, kind="stable")
        self.member_rows = member[order]
        self.member_cum = np.cumsum(member_w[order])
        bounds = np.searchsorted(genre[order], np.arange(len(GENRES) + 1))
        self.g_start, self.g_end = bounds[:-1], bounds[1:]
        low = np.concatenate([[0.0], self.member_cum])
        self.g_low = low[self.g_start]
        self.g_high = low[self.g_end]
        self._global = CumulativeIndex(self.cum)
        self._members = CumulativeIndex(self.member_cum)
        # the same memberships by (genre, scene)
        sub = genre * SCENES + track_scene(album[member])
        order = np.argsort(sub, kind="stable")
        self.scene_rows = member[order]
        self.scene_cum = np.cumsum(member_w[order])
        bounds = np.searchsorted(sub[order], np.arange(len(GENRES) * SCENES + 1))
        self.s_start, self.s_end = bounds[:-1], bounds[1:]
        low = np.concatenate([[0.0], self.scene_cum])
        self.s_low = low[self.s_start]
        self.s_high = low[self.s_end]
        self._scenes = CumulativeIndex(self.scene_cum)
        # sessions: each track's next one on its album and in its scene's playlist
        playlist = g1.astype(np.int64) * SCENES + track_scene(album)
        self.album_next, self.playlist_next = successors(eligible, album, playlist)

    def __len__(self) -> int:
        return len(self.rows)

    def uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n tracks, uniform with replacement (the reference server's random choice)."""
        return self.rows[rng.integers(0, len(self.rows), n)]

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n tracks weighted by popularity."""
        return self.rows[self._global.find(rng.random(n) * self.cum[-1])]

    def for_users(
        self,
        rng: np.random.Generator,
        user_rows: np.ndarray,
        preferred: np.ndarray,
        counts: np.ndarray,
        taste: Taste | None = None,
    ) -> np.ndarray:
        """Listening sessions of users (rows) with `preferred` genres (k x 3, -1 padded) and,
        after day 0, their drifted `taste`: counts[i] listens each, grouped by user."""
        if len(self.rows) == 0:
            raise ValueError("no track to listen to")
        parts = []
        for lo in range(0, len(counts), _USERS_PER_CHUNK):
            part = slice(lo, lo + _USERS_PER_CHUNK)
            starts = session_starts(rng, counts[part])
            started = np.concatenate([[0], np.cumsum(starts)])
            ends = np.cumsum(counts[part])
            firsts = self._chunk(
                rng,
                user_rows[part],
                preferred[part],
                started[ends] - started[ends - counts[part]],
                None if taste is None else taste.subset(part),
            )
            parts.append(follow_sessions(rng, starts, firsts, self.album_next, self.playlist_next))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)

    def _chunk(
        self,
        rng: np.random.Generator,
        user_rows: np.ndarray,
        preferred: np.ndarray,
        counts: np.ndarray,
        taste: Taste | None,
    ) -> np.ndarray:
        """counts[i] independent listens of each user: the first track of each session."""
        total = int(counts.sum())
        owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        # one draw decides both: preferred or not, and (rescaled) which preferred genre
        r = rng.random(total)
        u = rng.random(total)
        sel = np.flatnonzero(r < PREFERRED_SHARE)
        owner = owner[sel]
        listener = user_rows[owner]
        r = r[sel] / PREFERRED_SHARE
        n_pref = (preferred >= 0).sum(axis=1)[owner]
        position = (r >= _POSITION_CUTS[n_pref, 0]).astype(np.int64)
        position += r >= _POSITION_CUTS[n_pref, 1]
        genre = preferred.reshape(-1)[owner * 3 + position].astype(np.int64)
        shift = np.zeros(len(sel), dtype=np.int64)
        if taste is not None:  # a drifting user's new genre takes a share of their taste
            moved = rng.random(len(sel)) < taste.new_share[owner]
            genre[moved] = taste.new_genre[owner[moved]]
            shift = taste.scene_shift[owner]
        usable = genre >= 0
        usable[usable] = self.g_end[genre[usable]] > self.g_start[genre[usable]]
        sel, g, listener, shift = sel[usable], genre[usable], listener[usable], shift[usable]
        items = np.empty(total, dtype=np.int32)
        # in the user's scene of that genre (when the scene has tracks), else the whole genre
        sub = g * SCENES + (user_scene(listener, g) + shift) % SCENES
        in_scene = (rng.random(len(sel)) < SCENE_SHARE) & (self.s_end[sub] > self.s_start[sub])
        at, sub = sel[in_scene], sub[in_scene]
        target = self.s_low[sub] + u[at] * (self.s_high[sub] - self.s_low[sub])
        picked = np.clip(self._scenes.find(target), self.s_start[sub], self.s_end[sub] - 1)
        items[at] = self.scene_rows[picked]
        at, g = sel[~in_scene], g[~in_scene]
        target = self.g_low[g] + u[at] * (self.g_high[g] - self.g_low[g])
        picked = np.clip(self._members.find(target), self.g_start[g], self.g_end[g] - 1)
        items[at] = self.member_rows[picked]
        rest = np.ones(total, dtype=bool)
        rest[sel] = False
        rest = np.flatnonzero(rest)
        items[rest] = self.rows[self._global.find(u[rest] * self.cum[-1])]
        return items

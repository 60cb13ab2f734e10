"""Listening sessions (realistic profile): what follows what in a history.

A history is a sequence of sessions. A session starts from a track drawn by the user's taste
(simulator.listens), then at each step continues with probability CONTINUE_P: with probability
ALBUM_SHARE to the next track of the same album (the tracks of an album are consecutive rows;
past its last track, to the scene's playlist), else to the next track of the scene's playlist
(the tracks of a genre's scene in a fixed shuffled order, cyclic). Consecutive positions thus
carry a signal a transition model can learn, on top of the co-listening one.
"""

from __future__ import annotations

import numpy as np

from simulator.hashing import splitmix64

CONTINUE_P = 0.7  # the chance that a session goes on after each track (mean length ~3.3)
ALBUM_SHARE = 0.5  # of the continuations: the album's next track; the rest: the playlist's
ALBUM_EXTRA_TRACKS = 7.0  # an album has 1 + Poisson(this) tracks


def album_starts(rng: np.random.Generator, first_row: int, n: int) -> np.ndarray:
    """For n new consecutive track rows from `first_row`: the row of each one's album opener."""
    sizes = 1 + rng.poisson(ALBUM_EXTRA_TRACKS, n // 2 + 1)  # the last album takes what is left
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    bounds = bounds[bounds < n]
    return first_row + np.repeat(bounds, np.diff(np.append(bounds, n)))


def successors(
    eligible: np.ndarray, album: np.ndarray, playlist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(album next, playlist next) for every track row (-1 for rows not in `eligible`).

    `album[row]` is the row opening the track's album; `playlist[row]` the track's playlist
    (genre x scene code). Each next track is eligible; the album's next falls back to the
    playlist's when the album has no eligible track after this one. A playlist's order is a
    hash of the rows: tracks added later join it at their place.
    """
    n = len(album)
    in_play = np.zeros(n, dtype=bool)
    in_play[eligible] = True
    # playlist order: by playlist, then a hash of the row
    order = eligible[np.lexsort((splitmix64(eligible), playlist[eligible]))]
    code = playlist[order]
    nxt = np.roll(order, -1)
    first_of = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    last_of = np.r_[first_of[1:], len(order)] - 1
    nxt[last_of] = order[first_of]  # the playlist wraps around
    playlist_next = np.full(n, -1, dtype=np.int64)
    playlist_next[order] = nxt
    # album order: rows; the next eligible row of the same album
    rows = np.flatnonzero(in_play)
    album_next = playlist_next.copy()
    same = album[rows[1:]] == album[rows[:-1]]
    album_next[rows[:-1][same]] = rows[1:][same]
    return album_next, playlist_next


def session_starts(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """A mask over the positions of histories with `counts` items: where a session starts."""
    total = int(counts.sum())
    starts = rng.random(total) >= CONTINUE_P
    firsts = np.cumsum(counts) - counts
    starts[firsts[counts > 0]] = True
    return starts


def follow_sessions(
    rng: np.random.Generator,
    starts: np.ndarray,
    first_items: np.ndarray,
    album_next: np.ndarray,
    playlist_next: np.ndarray,
) -> np.ndarray:
    """The items of every position: `first_items` at the starts, each next one following it."""
    items = np.empty(len(starts), dtype=np.int32)
    at = np.flatnonzero(starts)
    items[at] = first_items
    by_album = rng.random(len(starts)) < ALBUM_SHARE
    while at.size:  # one pass per step into the sessions: as many passes as the longest one
        at = at[at + 1 < len(starts)] + 1
        at = at[~starts[at]]
        prev = items[at - 1]
        items[at] = np.where(by_album[at], album_next[prev], playlist_next[prev])
    return items

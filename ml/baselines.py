"""The baselines ALS has to beat, and the fallbacks: `popularity` (most distinct listeners, ties:
lower track index) and `genre_popularity` (the favorite genre's, then global). Both exclude what
the user heard; users with the same genres share one ranking (ml.topk.top_k_ranked)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ml.topk import top_k_ranked

POPULARITY = "popularity"
GENRE_POPULARITY = "genre_popularity"
RANKING_CHUNK = 64  # genre classes ranked at once (memory)


@dataclass(frozen=True)
class Recommendations:
    ids: np.ndarray  # (n, k) int64 track columns, -1 where nothing is left
    scores: np.ndarray  # (n, k) float64: the share of users who listened to the track
    from_genre: np.ndarray  # (n, k) bool: picked for the favorite genre (else global)


class Popularity:
    """Popularity counted on one listen matrix (the training split, or all data)."""

    def __init__(self, counts: sp.csr_matrix, track_genres: sp.csr_matrix) -> None:
        n_users, n_tracks = counts.shape
        self.n_tracks = n_tracks
        self.listeners = np.bincount(counts.indices, minlength=n_tracks).astype(np.int64)
        self.share = self.listeners / max(n_users, 1)
        # one score per track: its popularity rank (ties: lower index), plus a bonus per genre
        # of the query it has, so that any in-genre track outranks every other
        order = np.lexsort((np.arange(n_tracks), -self.listeners))
        self.rank_score = np.empty(n_tracks)
        self.rank_score[order] = np.arange(n_tracks, 0, -1)
        self.bonus = float(n_tracks + 1)
        self.genres = track_genres.toarray() > 0  # tracks x genres
        self.n_genres = track_genres.shape[1]

    def recommend(
        self,
        k: int,
        *,
        heard: sp.csr_matrix | None = None,
        favorite_genre: np.ndarray | None = None,
    ) -> Recommendations:
        """Top-k for each user (a row of `heard`, users x tracks, whose tracks are excluded, or
        of `favorite_genre`): by genre when `favorite_genre` (codes, -1 = none) is given."""
        if heard is None and favorite_genre is None:
            raise ValueError("give heard or favorite_genre")
        n = heard.shape[0] if heard is not None else len(favorite_genre)  # type: ignore[arg-type]
        genres = np.zeros((n, self.n_genres), dtype=bool)
        if favorite_genre is not None and self.n_genres:
            codes = np.asarray(favorite_genre, dtype=np.int64)
            known = np.flatnonzero((codes >= 0) & (codes < self.n_genres))
            genres[known, codes[known]] = True
        return self._rank(k, genres, heard)

    def similar_by_genre(self, k: int) -> Recommendations:
        """For each track: the most popular other tracks sharing most of its genres."""
        itself = sp.identity(self.n_tracks, dtype=np.float32, format="csr")
        return self._rank(k, self.genres, itself)

    def _rank(self, k: int, genres: np.ndarray, heard: sp.csr_matrix | None) -> Recommendations:
        """Users with the same genres share one ranking: a few hundred rankings at most."""
        n = genres.shape[0]
        k = min(k, self.n_tracks)
        if n == 0 or k == 0:
            empty = np.empty((n, k))
            return Recommendations(empty.astype(np.int64), empty, empty.astype(bool))
        classes, of_user = _distinct_rows(genres)
        ids = top_k_ranked(self._rankings(classes), of_user.ravel(), k, heard)
        missing = ids < 0
        safe = np.maximum(ids, 0)
        in_genre = (self.genres[safe] & genres[:, None, :]).any(axis=2) & ~missing
        return Recommendations(ids, np.where(missing, 0.0, self.share[safe]), in_genre)

    def _rankings(self, classes: np.ndarray) -> np.ndarray:
        """Every track ranked for each genre class (rows of flags), best first, as int32: by
        the class's genres a track has, then popularity (rank_score + bonus x genres shared,
        whose order this is), so one stable sort of small integers per class (genres shared,
        over the popularity order) instead of a sort of float scores; a few classes at a time
        (at 100k tracks and a few hundred classes, all at once held ~0.8 GB)."""
        rankings = np.empty((len(classes), self.n_tracks), dtype=np.int32)
        by_popularity = np.argsort(-self.rank_score, kind="stable")  # rank_score: all distinct
        genres = self.genres[by_popularity].T.astype(np.float32)  # exact small counts
        for lo in range(0, len(classes), RANKING_CHUNK):
            part = classes[lo : lo + RANKING_CHUNK].astype(np.float32)
            # genres shared, in popularity order, negated (most first)
            shared = (part @ -genres).astype(np.int16)
            rankings[lo : lo + len(part)] = by_popularity[np.argsort(shared, axis=1, kind="stable")]
        return rankings


def _distinct_rows(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(flags, axis=0, return_inverse=True) of a boolean matrix, with each row packed
    into bytes first: one sort of n short keys, not a row-wise sort of n x genres (at a million
    users ~0.5 s instead of ~12 s)."""
    if flags.shape[1] == 0:  # no genres: one class
        return flags[:1], np.zeros(len(flags), dtype=np.int64)
    packed = np.packbits(flags, axis=1)
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, of_row = np.unique(keys, return_index=True, return_inverse=True)
    return flags[first], of_row.ravel()

"""The favorite-genre re-rank of a model's list (ml/README.md): of its first `depth` unheard
tracks, those of the user's declared favorite genre first; `depth` <= k leaves it as it is."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def favorite_genre_first(
    ids: np.ndarray, favorite: np.ndarray, track_genres: sp.csr_matrix, k: int, depth: int
) -> np.ndarray:
    """Which k columns of each row of `ids` (a model's ranked track columns, -1 empty) to
    serve, in order: the row's favorite-genre tracks (`favorite`: genre code per row, -1 none;
    `track_genres`: tracks x genres) among its first `depth` ahead of the others. Returns
    positions into `ids` (rows x min(k, columns)), for np.take_along_axis on ids and scores."""
    k = min(k, ids.shape[1])
    if depth <= k:
        return np.broadcast_to(np.arange(k), (len(ids), k))
    head = ids[:, :depth]
    # which genres each track has, as a table (tracks x genres: a few MB): one lookup per
    # cell (a binary search of (track, genre) keys per cell was most of the re-rank's time)
    member = np.zeros((track_genres.shape[0], max(track_genres.shape[1], 1)), dtype=bool)
    memberships = track_genres.tocoo()
    member[memberships.row, memberships.col] = True
    in_genre = member[np.maximum(head, 0), np.maximum(favorite, 0)[:, None]]
    in_genre &= (head >= 0) & (favorite >= 0)[:, None]
    # favorite-genre tracks, then the others, then empty slots; stable keeps the model's order
    group = np.where(in_genre, 0, np.where(head >= 0, 1, 2)).astype(np.int8)
    return np.argsort(group, axis=1, kind="stable")[:, :k]


def reranked(
    ids: np.ndarray, favorite: np.ndarray, track_genres: sp.csr_matrix, k: int, depth: int
) -> np.ndarray:
    """The k track columns favorite_genre_first serves, per row."""
    positions = favorite_genre_first(ids, favorite, track_genres, k, depth)
    return np.take_along_axis(ids, positions, axis=1)

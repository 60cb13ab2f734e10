"""The lists the app shows, as numpy columns ready for COPY: user_top_tracks (k unheard tracks
for every dim_users user, with their source) and similar_tracks (each track's k nearest)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares

from ml.baselines import GENRE_POPULARITY, POPULARITY, Popularity, Recommendations
from ml.config import Publish
from ml.interactions import Catalog, Interactions
from ml.model import recommend, similar

ALS = "als"
SOURCES = (ALS, GENRE_POPULARITY, POPULARITY)  # source codes 0, 1, 2


@dataclass(frozen=True)
class UserTopTracks:
    user_id: np.ndarray  # int64
    rank: np.ndarray  # int32, 1-based
    track_id: np.ndarray  # int64
    score: np.ndarray  # float64
    source: np.ndarray  # int8 code into SOURCES

    def sources(self) -> dict[str, int]:
        counts = np.bincount(self.source, minlength=len(SOURCES))
        return {name: int(n) for name, n in zip(SOURCES, counts, strict=True) if n}


@dataclass(frozen=True)
class SimilarTracks:
    track_id: np.ndarray  # int64
    rank: np.ndarray  # int32
    similar_track_id: np.ndarray  # int64
    score: np.ndarray  # float64


def _flat(
    owners: np.ndarray, ids: np.ndarray, scores: np.ndarray, track_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(owner, rank, track id, score) of every filled slot of `ids` (owners x k, -1 empty)."""
    valid = ids >= 0
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    owner = np.broadcast_to(owners[:, None], ids.shape)[valid]
    return owner, ranks[valid], track_ids[ids[valid]], scores[valid].astype(np.float64)


def _fallback_codes(recs: Recommendations) -> np.ndarray:
    codes = np.where(recs.from_genre, SOURCES.index(GENRE_POPULARITY), SOURCES.index(POPULARITY))
    return codes.astype(np.int8)


def build_lists(
    interactions: Interactions,
    catalog: Catalog,
    config: Publish,
    *,
    als: AlternatingLeastSquares | None,
    baseline: str = GENRE_POPULARITY,
) -> tuple[UserTopTracks, SimilarTracks]:
    """Both lists, from `als` or, with `als` None, from `baseline` (users with listens) and
    genre popularity (similar tracks); popularity is counted on all listens."""
    popularity = Popularity(interactions.matrix, catalog.track_genres)
    users = _user_top_tracks(interactions, catalog, popularity, config.k, als, baseline)
    if als is not None:
        ids, scores = similar(als, config.similar_k, config.similar_scoring)
    else:
        recs = popularity.similar_by_genre(config.similar_k)
        ids, scores = recs.ids, recs.scores
    similar_lists = SimilarTracks(
        *_flat(interactions.track_ids, ids, scores, interactions.track_ids)
    )
    return users, similar_lists


def _user_top_tracks(
    interactions: Interactions,
    catalog: Catalog,
    popularity: Popularity,
    k: int,
    als: AlternatingLeastSquares | None,
    baseline: str,
) -> UserTopTracks:
    """The list of every dim_users user; `als` None publishes `baseline` for users with listens,
    and users without listens always get their favorite genre's list."""
    k = min(k, interactions.n_tracks)
    rows = interactions.rows_of(catalog.user_ids)
    listened, silent = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
    genre = catalog.favorite_genre
    if als is not None:
        ids, scores = recommend(als, rows[listened], interactions.matrix, k)
        codes = np.zeros(ids.shape, dtype=np.int8)
    else:
        recs = popularity.recommend(
            k,
            heard=interactions.matrix[rows[listened]],
            favorite_genre=genre[listened] if baseline == GENRE_POPULARITY else None,
        )
        ids, scores, codes = recs.ids, recs.scores, _fallback_codes(recs)
    fallback = popularity.recommend(k, favorite_genre=genre[silent])
    ids, scores = np.vstack([ids, fallback.ids]), np.vstack([scores, fallback.scores])
    codes = np.vstack([codes, _fallback_codes(fallback)])
    owners = catalog.user_ids[np.concatenate([listened, silent])]
    valid = ids >= 0  # a valid prefix per row: both sources rank filled slots first
    return UserTopTracks(*_flat(owners, ids, scores, interactions.track_ids), source=codes[valid])

"""The lists the app shows, as numpy columns ready for COPY: user_top_tracks (k unheard tracks
for every dim_users user, with their source and the cold start of ml/README.md) and
similar_tracks (each catalog track's "play next", from ml.play_next)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ml.baselines import GENRE_POPULARITY, POPULARITY, Popularity, Recommendations
from ml.config import Publish
from ml.families import Recommender
from ml.interactions import Catalog, Interactions
from ml.play_next import PlayNext
from ml.rerank import favorite_genre_first
from ml.sequences import TrackFeatures

MODEL, NEW_TRACK = "model", "new_track"
USER_CHUNK = 100_000  # users ranked at once: bounds the (users x re-rank depth) candidates
SOURCES = (MODEL, GENRE_POPULARITY, POPULARITY, NEW_TRACK)  # source codes 0..3


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
    owners: np.ndarray, ids: np.ndarray, scores: np.ndarray, *extra: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(owner, rank, id, score, *extra) of every filled slot of `ids` (owners x k, -1 empty)."""
    valid = ids >= 0
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    owner = np.broadcast_to(owners[:, None], ids.shape)[valid]
    rest = (column[valid] for column in extra)
    return owner, ranks[valid], ids[valid], scores[valid].astype(np.float64), *rest


def _fallback_codes(recs: Recommendations) -> np.ndarray:
    codes = np.where(recs.from_genre, SOURCES.index(GENRE_POPULARITY), SOURCES.index(POPULARITY))
    return codes.astype(np.int8)


def blend(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best of two ranked lists (ids, source codes; rows x k, -1 empty) by
    weight x (1 - rank/k) for the first and (1 - weight) x (1 - rank/k) for the second; a track
    in both keeps its better score and its first-list source."""
    (ids_a, src_a), (ids_b, src_b) = first, second
    k = ids_a.shape[1]
    place = 1.0 - np.arange(k) / k
    ids = np.hstack([ids_a, ids_b])
    src = np.hstack([src_a, src_b])
    score = np.hstack([weight[:, None] * place, (1 - weight)[:, None] * place])
    score[ids < 0] = -np.inf
    # per row and id, the best first (ties: the first list's): one short sort per row, not a
    # sort of every row's slots by row, id and score
    order = np.lexsort((-score, ids), axis=1)
    sorted_ids = np.take_along_axis(ids, order, axis=1)
    rows, later = np.nonzero(sorted_ids[:, 1:] == sorted_ids[:, :-1])
    score[rows, order[rows, later + 1]] = -np.inf  # an id's every slot after its best
    best = np.argsort(-score, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(ids, best, axis=1)
    kept = np.take_along_axis(score, best, axis=1) > -np.inf
    return np.where(kept, picked, -1), np.where(kept, np.take_along_axis(src, best, axis=1), -1)


def new_track_picks(
    tracks: TrackFeatures, heard: np.ndarray, favorite: np.ndarray, genre_names: tuple[str, ...]
) -> np.ndarray:
    """For each user (their favorite genre code in `genre_names`, -1 none), one catalog track
    of that genre nobody has heard (rotated over users by position), as a track id; -1 when
    the genre has none."""
    cold = ~np.isin(tracks.track_ids, heard)
    index = {name: i for i, name in enumerate(tracks.genre_names)}
    to_features = np.array([index.get(name, -1) for name in genre_names] + [-1], dtype=np.int64)
    picks = np.full(len(favorite), -1, dtype=np.int64)
    genre_of_user = to_features[np.where(favorite >= 0, favorite, len(genre_names))]
    by_genre = sp.csc_matrix(tracks.genres)
    for g in np.unique(genre_of_user[genre_of_user >= 0]):
        rows = by_genre.indices[by_genre.indptr[g] : by_genre.indptr[g + 1]]
        candidates = tracks.track_ids[np.sort(rows[cold[rows]])]
        users = np.flatnonzero(genre_of_user == g)
        if len(candidates):
            picks[users] = candidates[np.arange(len(users)) % len(candidates)]
    return picks


def rows_or_empty(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """The CSR of `matrix`'s rows `rows`, an empty row where rows[i] is -1: one gather of the
    rows kept, none when they are all of the matrix's in order (at a million users a selection
    times a mask held three more copies of the listens)."""
    matrix = matrix.tocsr()
    rows = np.asarray(rows, dtype=np.int64)
    has = rows >= 0
    kept = rows[has]
    lengths = np.zeros(len(rows), dtype=np.int64)
    lengths[has] = np.diff(matrix.indptr)[kept]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if len(kept) == matrix.shape[0] and (kept == np.arange(len(kept))).all():
        indices, data = matrix.indices, matrix.data  # shared, not copied
    else:
        part = matrix[kept]
        indices, data = part.indices, part.data
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), matrix.shape[1]))


def build_lists(
    interactions: Interactions,
    catalog: Catalog,
    tracks: TrackFeatures,
    play_next: PlayNext,
    config: Publish,
    *,
    model: Recommender | None,
    baseline: str = GENRE_POPULARITY,
    depth: int = 0,
) -> tuple[UserTopTracks, SimilarTracks]:
    """Both lists: the users' from `model` (re-ranked to `depth`, ml.rerank) or, with None,
    from `baseline` (users with listens) and genre popularity; the tracks' from `play_next`.
    Popularity counts all listens."""
    popularity = Popularity(interactions.matrix, catalog.track_genres)
    k = min(config.k, interactions.n_tracks)
    rows = interactions.rows_of(catalog.user_ids)
    genre = catalog.favorite_genre
    heard = rows_or_empty(interactions.matrix, rows)  # users without listens: none
    fallback = popularity.recommend(k, heard=heard, favorite_genre=genre)
    ids, scores, codes = fallback.ids, fallback.scores, _fallback_codes(fallback)
    listened = np.flatnonzero(rows >= 0)
    if model is None and baseline == POPULARITY and len(listened):
        plain = popularity.recommend(k, heard=heard[listened])
        ids[listened], scores[listened] = plain.ids, plain.scores
        codes[listened] = _fallback_codes(plain)
    del heard, fallback  # at a million users each of these arrays is tens of MB: let go early
    if model is not None and len(listened):
        history = np.diff(interactions.matrix.indptr)[rows[listened]]
        weight = np.minimum(history / max(config.blend_until, 1), 1.0)
        place = 1.0 - np.arange(k) / k
        for lo in range(0, len(listened), USER_CHUNK):  # ranked and blended a chunk at a time
            part, w = listened[lo : lo + USER_CHUNK], weight[lo : lo + USER_CHUNK]
            found = model.recommend(rows[part], interactions.matrix, max(k, depth))
            served = favorite_genre_first(found[0], genre[part], catalog.track_genres, k, depth)
            width = served.shape[1]
            model_ids = np.full((len(part), k), -1, dtype=np.int64)
            model_scores = np.zeros((len(part), k))
            for out, values in zip((model_ids, model_scores), found, strict=True):
                out[:, :width] = np.take_along_axis(values, served, axis=1)
            model_src = np.where(model_ids >= 0, SOURCES.index(MODEL), -1).astype(np.int8)
            blended, src = blend((model_ids, model_src), (ids[part], codes[part]), w)
            ids[part], codes[part] = blended, src
            scores[part] = np.where(blended >= 0, place, 0.0)
            full = w >= 1  # no blend: the model's own scores
            scores[part[full]] = model_scores[full]
    track_ids = interactions.track_ids[np.maximum(ids, 0)]
    track_ids[ids < 0] = -1
    del ids
    if config.new_track_slots:
        picks = new_track_picks(tracks, interactions.track_ids, genre, catalog.genre_names)
        slots = slice(k - config.new_track_slots, k)
        has = picks >= 0
        track_ids[has, slots] = picks[has, None]
        codes[has, slots] = SOURCES.index(NEW_TRACK)
        scores[has, slots] = 0.0
    users = _flat(catalog.user_ids, track_ids, scores, codes.astype(np.int8))
    owner, rank, similar_id, score = _flat(play_next.track_ids, play_next.ids, play_next.scores)
    return UserTopTracks(*users), SimilarTracks(owner, rank, similar_id, score)

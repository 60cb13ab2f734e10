"""How good top-k lists are: the ranking metrics per user (for intervals and segments), and
beyond accuracy: catalog coverage, novelty, genre diversity inside a list, and the churn of
the served lists from one day to the next. Lists are track columns (users x k, -1 = empty)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ml.intervals import LEVEL, RESAMPLES, SEED, Interval, K, intervals
from ml.topk import in_rows

ACCURACY = ("precision", "recall", "map", "ndcg")
SEGMENTS = ("1-4", "5-20", "20+")  # distinct training tracks; "20+" is more than 20
COLD = "0"
ALL = "all"
CHUNK_CELLS = 4_000_000  # list-pair cells compared at once by genre_diversity


def per_user_ranking_metrics(
    ids: np.ndarray, truth: sp.csr_matrix, k: int
) -> dict[str, np.ndarray]:
    """Precision, recall, MAP and NDCG at k of each user's list `ids` (rows aligned with
    `truth`'s rows: the user's held-out tracks), as ml/README.md defines them; the reported
    metrics are their means over users."""
    m = ids.shape[0]
    relevant = np.diff(truth.indptr)
    if m == 0 or np.any(relevant == 0):
        raise ValueError("every evaluated user needs at least one held-out track")
    hits = in_rows(truth, np.arange(m), ids)
    slots = ids.shape[1]
    n_hits = hits.sum(axis=1)
    ideal = np.minimum(k, relevant)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, slots + 1)
    discount = 1.0 / np.log2(np.arange(2, max(k, slots) + 2))
    return {
        "precision": n_hits / k,
        "recall": n_hits / relevant,
        "map": (precision_at_rank * hits).sum(axis=1) / ideal,
        "ndcg": (hits * discount[:slots]).sum(axis=1) / np.cumsum(discount)[ideal - 1],
    }


def segments(train_tracks_per_user: np.ndarray) -> np.ndarray:
    """Each user's segment by distinct training tracks: "1-4", "5-20", "20+" (more than 20),
    "0" for a user with none."""
    n = np.asarray(train_tracks_per_user)
    return np.select([n == 0, n <= 4, n <= 20], [COLD, *SEGMENTS[:2]], SEGMENTS[2]).astype(str)


def segment_intervals(
    per_user: Mapping[K, np.ndarray],
    labels: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, dict[K, Interval]]:
    """Each column's interval (a metric's per-user values) over all users ("all") and inside
    each segment of `labels` (every segment listed; NaN intervals where a segment has no
    users); all columns on one set of resamples per segment."""
    names = [ALL, *SEGMENTS, *([COLD] if np.any(labels == COLD) else [])]
    out = {}
    for name in names:
        inside = slice(None) if name == ALL else labels == name
        columns = {metric: np.asarray(values)[inside] for metric, values in per_user.items()}
        out[name] = intervals(columns, resamples=resamples, level=level, seed=seed)
    return out


def catalog_coverage(ids: np.ndarray, n_catalog_tracks: int) -> float:
    """Distinct tracks in all the lists / tracks in the catalog."""
    return len(np.unique(ids[ids >= 0])) / max(n_catalog_tracks, 1)


def novelty(ids: np.ndarray, train: sp.csr_matrix) -> np.ndarray:
    """Per user, the mean over the list's tracks of the share of the catalog's tracks (the
    matrix's columns) with more training listeners than it: 0 for the most popular track,
    near 1 deep in the long tail, so higher is more novel. NaN for an empty list."""
    listeners = np.bincount(train.indices, minlength=train.shape[1])
    more = train.shape[1] - np.searchsorted(np.sort(listeners), listeners, side="right")
    share = more / max(train.shape[1], 1)
    filled = ids >= 0
    total = np.where(filled, share[np.where(filled, ids, 0)], 0.0).sum(axis=1)
    return _ratio(total, filled.sum(axis=1))


def genre_diversity(ids: np.ndarray, track_genres: sp.csr_matrix) -> np.ndarray:
    """Per user, the share of the list's track pairs with no genre in common, over the pairs
    whose tracks both have a genre (a track without one says nothing). NaN below 2 such."""
    masks = _genre_masks(track_genres)  # tracks + 1 (an empty slot, no genre) x words
    n, k = ids.shape
    out = np.full(n, np.nan)
    later = np.triu(np.ones((k, k), dtype=bool), 1)
    chunk = max(1, CHUNK_CELLS // max(k * k * masks.shape[1], 1))
    for start in range(0, n, chunk):
        rows = ids[start : start + chunk]
        bits = masks[np.where(rows >= 0, rows, len(masks) - 1)]  # (users, k, words)
        has = bits.any(axis=2)
        pairs = has[:, :, None] & has[:, None, :] & later
        shared = (bits[:, :, None, :] & bits[:, None, :, :]).any(axis=3)
        out[start : start + chunk] = _ratio(
            (pairs & ~shared).sum(axis=(1, 2)), pairs.sum(axis=(1, 2))
        )
    return out


def _ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole, NaN where whole is 0."""
    return np.divide(part, whole, out=np.full(len(whole), np.nan), where=whole > 0)


def mean_or_nan(values: np.ndarray) -> float:
    """The mean of the non-NaN values; NaN when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if len(kept) else float("nan")


def _genre_masks(track_genres: sp.csr_matrix) -> np.ndarray:
    """Each track's genres as bits of uint64 words, and a last all-zero row."""
    coo = track_genres.tocoo()
    keep = coo.data != 0
    tracks, genres = coo.row[keep], coo.col[keep].astype(np.uint64)
    masks = np.zeros(
        (track_genres.shape[0] + 1, max(1, -(-track_genres.shape[1] // 64))), np.uint64
    )
    np.bitwise_or.at(masks, (tracks, genres // 64), np.uint64(1) << (genres % np.uint64(64)))
    return masks


def churn(yesterday: tuple[np.ndarray, np.ndarray], today: tuple[np.ndarray, np.ndarray]) -> float:
    """The share of yesterday's served (user, track) rows not served today, over the users
    served both days (each day: aligned user ids and track ids). NaN when none are."""
    counted = Churn(*today)
    counted.add(*yesterday)
    return counted.value


CHURN_CHUNK = 1_000_000  # yesterday's rows compared at once


class Churn:
    """churn() counted part by part: today's lists held as one row of tracks per user (the
    users sorted), yesterday's rows added as they are read, so they are never held whole."""

    def __init__(self, users: np.ndarray, tracks: np.ndarray) -> None:
        users, tracks = np.asarray(users, np.int64), np.asarray(tracks, np.int64)
        if len(users) > 1 and (users[1:] < users[:-1]).any():  # the lists come sorted
            order = np.argsort(users, kind="stable")
            users, tracks = users[order], tracks[order]
        starts = (
            np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
            if len(users)
            else np.zeros(0, np.int64)
        )
        counts = np.diff(np.r_[starts, len(users)])
        self.users = users[starts]  # sorted, distinct
        # each user's tracks in a row, padded with the row's first track (a repeat changes
        # nothing of "is the track among them")
        width = int(counts.max()) if len(counts) else 0
        if (counts == width).all():  # the usual: k rows each, already one row per user
            self.tracks = tracks.reshape(len(starts), width)
        else:
            self.tracks = np.repeat(tracks[starts][:, None], width, axis=1)
            slot = np.arange(len(users)) - np.repeat(starts, counts)
            self.tracks[np.repeat(np.arange(len(starts)), counts), slot] = tracks
        self.served = 0  # yesterday's rows of users served today
        self.changed = 0  # ... whose track is not served to them today

    def add(self, users: np.ndarray, tracks: np.ndarray) -> None:
        """Count some of yesterday's (user, track) rows."""
        if len(self.users) == 0:
            return
        for lo in range(0, len(users), CHURN_CHUNK):
            u = np.asarray(users[lo : lo + CHURN_CHUNK], np.int64)
            t = np.asarray(tracks[lo : lo + CHURN_CHUNK], np.int64)
            at = np.minimum(np.searchsorted(self.users, u), len(self.users) - 1)
            both = self.users[at] == u
            kept = (self.tracks[at[both]] == t[both][:, None]).any(axis=1)
            self.served += int(both.sum())
            self.changed += int((~kept).sum())

    @property
    def value(self) -> float:
        return self.changed / self.served if self.served else float("nan")


def beyond_accuracy(
    ids: np.ndarray, train: sp.csr_matrix, track_genres: sp.csr_matrix, n_catalog_tracks: int
) -> dict[str, float]:
    """Coverage, and the mean over users of novelty and genre diversity, of lists `ids`."""
    return {
        "coverage": catalog_coverage(ids, n_catalog_tracks),
        "novelty": mean_or_nan(novelty(ids, train)),
        "diversity": mean_or_nan(genre_diversity(ids, track_genres)),
    }

"""The "play next" lists: each track's k next tracks, from what users actually played next
(the candidates, their fill and the gate on held-out next listens: ml/README.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ml.baselines import GENRE_POPULARITY, POPULARITY, Popularity
from ml.interactions import positions_of
from ml.intervals import difference, intervals
from ml.quality import mean_or_nan
from ml.sequences import Sequences, TrackFeatures

log = logging.getLogger(__name__)

TRANSITIONS = "transitions"
CO_OCCURRENCE = "co_occurrence"
BLEND = "blend"
COLLABORATIVE = "collaborative"
CANDIDATES = (TRANSITIONS, CO_OCCURRENCE, BLEND, COLLABORATIVE, POPULARITY, GENRE_POPULARITY)
LISTEN_CHUNK = 4_000_000  # listens paired at once
NO_GAP = np.iinfo(np.int64).max  # transitions: the next listen, however much later
SOURCES = ("model", "artist", GENRE_POPULARITY, POPULARITY)  # what filled a slot: codes 0..3
MODEL, ARTIST, GENRE, GLOBAL = range(len(SOURCES))

# (users x tracks listen counts of the training histories, k) -> (ids, scores), tracks x k:
# each track's k most similar track columns by a collaborative model, best first, -1 empty.
Collaborative = Callable[[sp.csr_matrix, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PlayNextSettings:
    k: int = 10
    windows: tuple[int, ...] = (3,)  # co-occurrence: at most this many positions apart ...
    max_gap_seconds: int = 6 * 3600  # ... and at most this far apart in listen time
    co_occurrence_weight: float = 0.25  # the blend's co-occurrence, relative to transitions
    dampings: tuple[float, ...] = (0.0, 0.5)  # score / popularity ** damping
    collaborative_weights: tuple[float, ...] = (0.0, 0.25, 0.5)  # the blend's
    # (each tuple: the values validation chooses from)
    max_eval_users: int = 100_000  # held-out pairs sampled per split (bootstrap cost)
    max_fit_users: int = 0  # candidates fit on a seeded sample of this many users (0: all)
    bootstrap_samples: int = 1000
    seed: int = 0
    pair_budget: int = 5_000_000  # track pairs counted at once (bounds memory)


@dataclass(frozen=True)
class Config:
    """One sequence model: transitions x t + co-occurrence (in `window`) x c, damped, blended
    with the collaborative list at weight `collaborative`."""

    name: str
    transitions: float = 1.0
    co_occurrence: float = 0.0
    damping: float = 0.0
    collaborative: float = 0.0
    window: int = 3

    def label(self) -> str:
        window = f",window={self.window}" if self.co_occurrence else ""
        return (
            f"{self.name}(t={self.transitions:g},c={self.co_occurrence:g}{window},"
            f"damping={self.damping:g},collaborative={self.collaborative:g})"
        )


@dataclass(frozen=True)
class Histories:
    """Listens in catalog column space, sorted by user then position."""

    user: np.ndarray  # int32 user code, non-decreasing
    position: np.ndarray  # int32
    col: np.ndarray  # int32 column into the catalog's track ids
    at: np.ndarray  # int64 epoch seconds
    n_tracks: int

    def starts_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """First index and length of each user's run."""
        starts = (
            np.flatnonzero(np.r_[True, self.user[1:] != self.user[:-1]])
            if len(self.user)
            else np.zeros(0, np.int64)
        )
        return starts, np.diff(np.r_[starts, len(self.user)])

    def without_tail(self, tail: int) -> Histories:
        """Each user's history without its last `tail` listens."""
        starts, counts = self.starts_counts()
        from_end = np.repeat(starts + counts, counts) - np.arange(len(self.user))  # last: 1
        keep = from_end > tail
        return Histories(
            self.user[keep], self.position[keep], self.col[keep], self.at[keep], self.n_tracks
        )

    def held_out(self, tail: int) -> tuple[np.ndarray, np.ndarray]:
        """(seed, target) columns: each user's `tail`-th listen from the end and the one
        before it, for users with more than `tail` listens; repeats (seed == target) left
        out, as no list holds its own track."""
        starts, counts = self.starts_counts()
        target = (starts + counts - tail)[counts > tail]
        seeds, targets = self.col[target - 1], self.col[target]
        keep = seeds != targets
        return seeds[keep], targets[keep]

    def sampled(self, max_users: int, seed: int) -> Histories:
        """The histories of a seeded sample of at most `max_users` users (0: everyone's)."""
        n_users = int(self.user[-1]) + 1 if len(self.user) else 0
        if max_users <= 0 or n_users <= max_users:
            return self
        chosen = np.zeros(n_users, dtype=bool)
        chosen[np.random.default_rng(seed).choice(n_users, max_users, replace=False)] = True
        keep = chosen[self.user]
        return Histories(
            self.user[keep], self.position[keep], self.col[keep], self.at[keep], self.n_tracks
        )

    def counts(self) -> sp.csr_matrix:
        """users x tracks listen counts, built as CSR straight from the sorted users (no COO
        copy of 20M listens)."""
        n_users = int(self.user[-1]) + 1 if len(self.user) else 0
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.user, minlength=n_users), out=indptr[1:])
        ones = np.ones(len(self.user), dtype=np.float32)
        matrix = sp.csr_matrix((ones, self.col.copy(), indptr), shape=(n_users, self.n_tracks))
        matrix.sum_duplicates()  # sorts each row's columns in place, then adds repeats
        return matrix


def _column_lookup(catalog_ids: np.ndarray, n_listens: int) -> Callable[[np.ndarray], np.ndarray]:
    """track ids -> catalog columns (-1: not in the catalog; `catalog_ids` sorted, distinct),
    as positions_of gives them: by a table over the catalog's id range when that table is no
    larger than the listens' columns (database keys are usually dense enough), as a binary
    search of every listen's track among the catalog's costs a cache miss per step."""
    span = int(catalog_ids[-1]) - int(catalog_ids[0]) + 1 if len(catalog_ids) else 0
    if not len(catalog_ids) or span > max(n_listens, 1 << 20):

        def searched(track_ids: np.ndarray) -> np.ndarray:
            return positions_of(catalog_ids, track_ids).astype(np.int32)

        return searched
    low = int(catalog_ids[0])
    table = np.full(span, -1, dtype=np.int32)
    table[catalog_ids - low] = np.arange(len(catalog_ids), dtype=np.int32)

    def looked_up(track_ids: np.ndarray) -> np.ndarray:
        offset = track_ids - low
        outside = (offset < 0) | (offset >= span)
        np.clip(offset, 0, span - 1, out=offset)
        found = table[offset]
        found[outside] = -1
        return found

    return looked_up


def histories(sequences: Sequences, catalog_ids: np.ndarray) -> Histories:
    """`sequences` in the column space of `catalog_ids` (sorted); listens of other tracks
    are dropped (their neighbours are then not counted as consecutive)."""
    n = len(sequences)
    cols = np.empty(n, dtype=np.int32)  # mapped a chunk at a time: no int64 of every listen
    to_column = _column_lookup(catalog_ids, n)
    for start in range(0, n, LISTEN_CHUNK):
        part = slice(start, start + LISTEN_CHUNK)
        cols[part] = to_column(sequences.track_id[part])
    del to_column
    keep = cols >= 0
    every = bool(keep.all())  # the usual case: no copies, the arrays are shared

    def kept(values: np.ndarray) -> np.ndarray:
        return values if every else values[keep]

    user_ids = kept(sequences.user_id)  # sorted: a user's code counts the changes before it
    changes = np.zeros(len(user_ids), dtype=np.int32)  # compact: 20 bytes a listen
    changes[1:] = user_ids[1:] != user_ids[:-1]
    del user_ids
    return Histories(
        np.cumsum(changes, dtype=np.int32),
        kept(sequences.position.astype(np.int32, copy=False)),
        kept(cols),
        kept(sequences.listened_at),
        len(catalog_ids),
    )


# --- the sequence models --------------------------------------------------------------------


def pair_distances(h: Histories, window: int, max_gap: int) -> list[np.ndarray]:
    """Per lag 1..window, how many positions listen i + lag comes after listen i where the
    two pair (same user, at most `window` positions and `max_gap` seconds apart, different
    tracks), else 0: one byte per listen (the pair's weight is 1 / that distance)."""
    n, found = len(h.user), []
    dtype = np.int8 if window <= np.iinfo(np.int8).max else np.int32
    for lag in range(1, window + 1):
        distance = np.zeros(n, dtype=dtype)
        for start in range(0, max(n - lag, 0), LISTEN_CHUNK):
            first = slice(start, min(start + LISTEN_CHUNK, n - lag))
            second = slice(first.start + lag, first.stop + lag)
            apart = h.position[second] - h.position[first]
            ok = (
                (h.user[second] == h.user[first])
                & (apart <= window)
                & (apart > 0)  # positions increase within a history
                & (h.at[second] - h.at[first] <= max_gap)
                & (h.col[second] != h.col[first])
            )
            distance[first] = np.where(ok, apart, 0)
        found.append(distance)
    return found


def _blocks(h: Histories, n_pairs: int, budget: int) -> list[tuple[int, int]]:
    """Column ranges of source tracks holding about `budget` counted pairs each (by listens)."""
    listens = np.bincount(h.col, minlength=h.n_tracks)
    n_blocks = max(1, -(-n_pairs // max(budget, 1)))
    bounds = np.linspace(0, listens.sum(), n_blocks + 1)[1:-1]
    edges = np.unique(np.r_[0, np.searchsorted(np.cumsum(listens), bounds), h.n_tracks])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def block_members(h: Histories, lo: int, hi: int) -> np.ndarray:
    """The listens of tracks lo..hi (columns), in order."""
    return np.flatnonzero((h.col >= lo) & (h.col < hi))


def pair_counts(
    h: Histories,
    window: int,
    max_gap: int,
    lo: int = 0,
    hi: int | None = None,
    distances: list[np.ndarray] | None = None,
    members: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Rows lo..hi (source tracks) of the pair counts: window 1 counts b right after a (the
    transitions); a wider window counts b within `window` positions and `max_gap` seconds of
    a, either way round, weighted 1 / distance (the co-occurrence). `distances`:
    pair_distances'; `members`: block_members(h, lo, hi)."""
    hi = h.n_tracks if hi is None else hi
    distances = pair_distances(h, window, max_gap) if distances is None else distances
    members = block_members(h, lo, hi) if members is None else members
    # the pairs are found among the block's listens (a distance is 0 past n - lag, so i + lag
    # stays in range), not by a pass over every listen per lag and way; the block's tracks
    # are looked up once (the rows of its pairs), and each pair's distance was stored with
    # its flag, so a pair costs one look-up of its other listen's track
    weight = (1.0 / np.arange(window + 1, dtype=np.float64)[1:]).astype(np.float32)
    weight = np.r_[np.float32(0), weight]  # by distance: 1 / distance (as float32)
    member_cols = h.col[members] - np.int32(lo)
    rows, cols, values = [], [], []
    for lag, distance in enumerate(distances, start=1):
        after = distance[members]  # the block's listen first, the pair's second lag later
        paired = after > 0
        ways = [(member_cols[paired], members[paired] + lag, after[paired])]
        if window > 1:  # the pairs whose second listen is the block's
            seconds = members >= lag
            before = distance[members[seconds] - lag]
            paired = before > 0
            firsts = members[seconds][paired] - lag
            ways.append((member_cols[seconds][paired], firsts, before[paired]))
        for row, other, apart in ways:
            rows.append(row)
            cols.append(h.col[other])
            values.append(weight[apart])
    matrix = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(hi - lo, h.n_tracks),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


def top_k_rows(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every row of a sparse matrix of positive scores, as float32 (ties:
    lower column), vectorised: (ids, scores) (rows x k), -1 / 0 past the row's entries."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()  # sorted indices, one entry per column
    if (matrix.data <= 0).any():
        raise ValueError("top_k_rows ranks positive scores only")
    n = matrix.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(matrix.indptr))
    # one stable sort of a 64-bit key: the row, then the score's bits (positive floats order
    # like their bit patterns), complemented for best first; equal keys keep column order
    bits = np.ascontiguousarray(matrix.data).view(np.uint32).astype(np.int64)
    order = np.argsort((rows << 32) | (0xFFFFFFFF - bits), kind="stable")
    rank = np.arange(len(order)) - matrix.indptr[rows]  # rows is sorted already
    keep = rank < k
    ids = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float64)
    ids[rows[keep], rank[keep]] = matrix.indices[order[keep]]
    scores[rows[keep], rank[keep]] = matrix.data[order[keep]]
    return ids, scores


def _row_max_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    best = matrix.max(axis=1).toarray().ravel()
    scale = (1.0 / np.where(best > 0, best, 1.0)).astype(np.float32)
    return _scaled(matrix, rows=scale)


def _scaled(
    matrix: sp.csr_matrix, *, rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> sp.csr_matrix:
    """Each stored entry times its row's and column's factor: diag(rows) . matrix . diag(cols)
    entry by entry (the same products as the sparse products, in the matrix's dtype), keeping
    the matrix's sorted columns instead of a product's unsorted ones."""
    data = matrix.data
    if rows is not None:
        data = data * np.repeat(rows.astype(data.dtype), np.diff(matrix.indptr))
    if cols is not None:
        data = data * cols.astype(data.dtype)[matrix.indices]
    out = sp.csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape)
    out.has_sorted_indices = matrix.has_sorted_indices
    return out


def _collaborative_matrix(ids: np.ndarray, n_tracks: int) -> sp.csr_matrix:
    """The collaborative lists as a tracks x tracks matrix of reciprocal ranks (1, 1/2, ...):
    a scale every model shares, whatever its scores mean."""
    valid = ids >= 0
    rank = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)[valid]
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)[valid]
    values = (1.0 / (1.0 + rank)).astype(np.float32)
    return sp.csr_matrix((values, (rows, ids[valid])), shape=(n_tracks, n_tracks))


def fit_sequence_lists(
    h: Histories,
    configs: list[Config],
    settings: PlayNextSettings,
    collaborative_ids: np.ndarray | None = None,
) -> dict[Config, tuple[np.ndarray, np.ndarray]]:
    """Each config's top-k (ids, scores) of every track (tracks x k, column space), counted
    in blocks of source tracks so memory stays bounded by `settings.pair_budget`."""
    k, n_tracks = settings.k, h.n_tracks
    windows = sorted({c.window for c in configs if c.co_occurrence})
    n_pairs = len(h.user) * (1 + 2 * sum(windows))
    popularity = np.maximum(np.bincount(h.col, minlength=n_tracks), 1).astype(np.float32)
    collab = None
    if collaborative_ids is not None:
        collab = _collaborative_matrix(collaborative_ids, n_tracks)
    out = {c: (np.full((n_tracks, k), -1, np.int64), np.zeros((n_tracks, k))) for c in configs}
    t_distances = pair_distances(h, 1, NO_GAP)
    c_distances = {w: pair_distances(h, w, settings.max_gap_seconds) for w in windows}
    for lo, hi in _blocks(h, n_pairs, settings.pair_budget):
        members = block_members(h, lo, hi)  # one pass over the listens per block
        t_counts = pair_counts(h, 1, NO_GAP, lo, hi, t_distances, members)
        c_counts = {
            w: pair_counts(h, w, settings.max_gap_seconds, lo, hi, distances, members)
            for w, distances in c_distances.items()
        }
        del members
        for config in configs:
            scores = config.transitions * t_counts
            if config.co_occurrence:
                scores = scores + config.co_occurrence * c_counts[config.window]
            scores = sp.csr_matrix(scores)
            if config.damping:
                scores = _scaled(scores, cols=popularity**-config.damping)
            scores = _row_max_normalised(scores)
            if config.collaborative and collab is not None:
                scores = (1 - config.collaborative) * scores + config.collaborative * collab[lo:hi]
            scores.eliminate_zeros()
            ids, values = top_k_rows(scores, k)
            out[config][0][lo:hi], out[config][1][lo:hi] = ids, values
    return out


# --- fill, fallbacks, cold start ------------------------------------------------------------


def merge_lists(
    parts: list[tuple[np.ndarray, np.ndarray, int | np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the first k distinct ids of the parts in order (each (ids, scores, source
    code or codes); -1 empty): (ids, scores, source codes), rows x k."""
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([np.asarray(p[1], np.float64) for p in parts], axis=1)
    source = np.concatenate([np.broadcast_to(p[2], p[0].shape) for p in parts], axis=1)
    order = np.argsort(ids, axis=1, kind="stable")  # equal ids: the earlier part first
    ranked = np.take_along_axis(ids, order, 1)
    repeat = np.zeros(ids.shape, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], 1)
    keep = (ids >= 0) & ~repeat
    return _first_kept(keep, ids, scores, source, k)


def _first_kept(
    keep: np.ndarray, ids: np.ndarray, scores: np.ndarray, source: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the first k entries where `keep` holds, packed to the front (-1 / 0 / -1
    after; at most as many columns as given): each kept entry goes to its count of kept
    entries so far (no sort per row)."""
    n, k = ids.shape[0], min(k, ids.shape[1])
    slot = np.cumsum(keep, axis=1, dtype=np.int32) - 1
    keep = keep & (slot < k)
    rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)[keep]
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.zeros((n, k))
    out_source = np.full((n, k), -1, dtype=np.int8)
    at = slot[keep]
    out_ids[rows, at] = ids[keep]
    out_scores[rows, at] = scores[keep]
    out_source[rows, at] = source[keep]
    return out_ids, out_scores, out_source


def artist_lists(artist: np.ndarray, listeners: np.ndarray, k: int) -> np.ndarray:
    """Each track's k most-played other tracks of its artist (most listeners, ties: lower
    column), tracks x k, -1 empty (and for tracks without an artist)."""
    n = len(artist)
    has = np.flatnonzero(artist >= 0)
    ids = np.full((n, k + 1), -1, dtype=np.int64)
    if len(has):
        order = has[np.lexsort((has, -listeners[has], artist[has]))]
        grouped = artist[order]
        rank = np.arange(len(order)) - np.searchsorted(grouped, grouped)
        top = np.full((int(grouped.max()) + 1, k + 1), -1, dtype=np.int64)
        first = rank <= k
        top[grouped[first], rank[first]] = order[first]
        ids[has] = top[artist[has]]
    ids[ids == np.arange(n)[:, None]] = -1
    return merge_lists([(ids, np.zeros(ids.shape), 0)], k)[0]


@dataclass(frozen=True)
class Fallbacks:
    """The fill of every list, counted on one set of histories."""

    artist: tuple[np.ndarray, np.ndarray]
    genre: tuple[np.ndarray, np.ndarray, np.ndarray]  # ids, scores, source (genre or global)
    popular: tuple[np.ndarray, np.ndarray]
    # the fill alone (artist, then genre, then global picks), merged once for every fill()
    merged: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = [(*self.artist, ARTIST), self.genre, (*self.popular, GLOBAL)]
        object.__setattr__(self, "merged", merge_lists(parts, self.popular[0].shape[1]))

    def fill(
        self, ids: np.ndarray | None = None, scores: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`ids` (model lists, or none) filled with artist, then genre, then global picks:
        merge_lists of the model's and the fill's parts, from the fill merged once (a fill
        pick is kept where the model's list lacks it; the first k of the merged fill are
        enough, as at most as many of them as the model's list keeps can be dropped)."""
        fill_ids, fill_scores, fill_source = self.merged
        k = fill_ids.shape[1]
        if ids is None:
            return fill_ids.copy(), fill_scores.copy(), fill_source.copy()
        ids = np.asarray(ids)
        model = ids >= 0
        for j in range(1, ids.shape[1]):  # a repeat within the model's list counts once
            model[:, j] &= ~(ids[:, :j] == ids[:, j : j + 1]).any(axis=1)
        taken = np.zeros(fill_ids.shape, dtype=bool)
        for j in range(ids.shape[1]):
            taken |= fill_ids == np.where(model[:, j], ids[:, j], -1)[:, None]
        return _first_kept(
            np.concatenate([model, (fill_ids >= 0) & ~taken], axis=1),
            np.concatenate([ids, fill_ids], axis=1),
            np.concatenate([np.asarray(scores, np.float64), fill_scores], axis=1),
            np.concatenate([np.full(ids.shape, MODEL, np.int8), fill_source], axis=1),
            k,
        )


def fallbacks(h: Histories, tracks: TrackFeatures, k: int) -> Fallbacks:
    return fallbacks_of(h.counts(), tracks, k)


def fallbacks_of(counts: sp.csr_matrix, tracks: TrackFeatures, k: int) -> Fallbacks:
    """The fill, from users x catalog tracks listens (the tracks' listeners are what count)."""
    popularity = Popularity(counts, tracks.genres)
    itself = sp.identity(counts.shape[1], dtype=np.float32, format="csr")
    global_recs = popularity.recommend(k, heard=itself)
    genre_recs = popularity.similar_by_genre(k)
    artist_ids = artist_lists(tracks.artist, popularity.listeners, k)
    artist_scores = np.where(artist_ids >= 0, popularity.share[np.maximum(artist_ids, 0)], 0.0)
    return Fallbacks(
        (artist_ids, artist_scores),
        (genre_recs.ids, genre_recs.scores, np.where(genre_recs.from_genre, GENRE, GLOBAL)),
        (global_recs.ids, global_recs.scores),
    )


# --- evaluation -----------------------------------------------------------------------------


def hits(
    ids: np.ndarray, seeds: np.ndarray, targets: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out pair: hit@k (target in the seed's first k) and reciprocal rank@k."""
    match = ids[seeds, :k] == targets[:, None]
    hit = match.any(axis=1)
    rr = np.where(hit, 1.0 / (1.0 + match.argmax(axis=1)), 0.0)
    return hit.astype(np.float64), rr


def _sample(
    pairs: tuple[np.ndarray, np.ndarray], size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    seeds, targets = pairs
    if len(seeds) <= size:
        return seeds, targets
    chosen = np.sort(np.random.default_rng(seed).choice(len(seeds), size, replace=False))
    return seeds[chosen], targets[chosen]


# --- choosing and publishing ----------------------------------------------------------------


@dataclass(frozen=True)
class PlayNext:
    """The published lists and how the candidates did.

    `ids[i]` are the next tracks of `track_ids[i]` (track ids, best first, -1 empty);
    `source` codes index SOURCES (the model's pick, or which fill)."""

    model: str  # what is published: the winner, or genre_popularity when the gate fails
    winner: str  # the validation winner
    config: str  # the published model's parameters, readable
    metrics: dict[str, float]  # flat, finite (none of a split with nothing to judge)
    track_ids: np.ndarray  # int64
    ids: np.ndarray  # (tracks, k) int64 track ids
    scores: np.ndarray  # (tracks, k) float64
    source: np.ndarray  # (tracks, k) int8 code into SOURCES
    candidates: dict[str, str] = field(default_factory=dict)  # family -> chosen config label


def _grid(settings: PlayNextSettings, has_collaborative: bool) -> list[Config]:
    weights = settings.collaborative_weights if has_collaborative else (0.0,)
    co = settings.co_occurrence_weight
    grid = []
    for damping in settings.dampings:
        grid.append(Config(TRANSITIONS, 1.0, 0.0, damping))
        for window in settings.windows:
            grid.append(Config(CO_OCCURRENCE, 0.0, 1.0, damping, window=window))
            grid += [Config(BLEND, 1.0, co, damping, w, window) for w in weights]
    return grid


def _candidate_lists(
    h: Histories,
    tracks: TrackFeatures,
    configs: list[Config],
    settings: PlayNextSettings,
    collaborative: Collaborative | None,
    families: set[str],
) -> dict[str | Config, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Filled lists (ids, scores, source) of the configs and of the named non-sequence
    families, all fit on `h`."""
    k = settings.k
    counts = h.counts()  # the fill's and the collaborative model's
    fill = fallbacks_of(counts, tracks, k)
    collab_ids = None
    if collaborative is not None and (
        COLLABORATIVE in families or any(c.collaborative for c in configs)
    ):
        collab_ids, collab_scores = collaborative(counts, k)
        collab_ids = np.asarray(collab_ids, dtype=np.int64)[:, :k]
        unheard = np.bincount(h.col, minlength=h.n_tracks) == 0  # a model knows nothing of them
        collab_ids = np.where(unheard[:, None], -1, collab_ids)
    del counts
    out: dict[str | Config, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if configs:
        for config, (ids, scores) in fit_sequence_lists(h, configs, settings, collab_ids).items():
            out[config] = fill.fill(ids, scores)
    if COLLABORATIVE in families and collab_ids is not None:
        out[COLLABORATIVE] = fill.fill(collab_ids, np.asarray(collab_scores)[:, :k])
    if POPULARITY in families:
        out[POPULARITY] = merge_lists([(*fill.popular, GLOBAL)], k)
    if GENRE_POPULARITY in families:
        out[GENRE_POPULARITY] = merge_lists([fill.genre], k)
    return out


def _family(key: str | Config) -> str:
    return key.name if isinstance(key, Config) else key


def _choose(
    val: dict[str | Config, tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, str | Config], str]:
    """Each family's best config on validation (hit@k, then MRR@k), and the best family."""

    def score(key: str | Config) -> tuple[float, float]:
        return mean_or_nan(val[key][0]), mean_or_nan(val[key][1])

    best: dict[str, str | Config] = {}
    for key in val:
        family = _family(key)
        if family not in best or score(key) > score(best[family]):
            best[family] = key
    return best, max(best, key=lambda family: score(best[family]))


def _test_metrics(
    test: dict[str, tuple[np.ndarray, np.ndarray]], resamples: int, seed: int
) -> dict[str, float]:
    """Each family's test hit@k and MRR@k, and its difference from popularity (and from the
    collaborative list, for the sequence models), with intervals on shared resamples."""
    columns = {}
    for family, pair in test.items():
        for metric, values in zip(("hit", "mrr"), pair, strict=True):
            columns[f"test_{family}_{metric}"] = values
            baselines = [POPULARITY] if family != POPULARITY else []
            if family in (TRANSITIONS, CO_OCCURRENCE, BLEND) and COLLABORATIVE in test:
                baselines.append(COLLABORATIVE)
            for other in baselines:
                other_values = test[other][0 if metric == "hit" else 1]
                columns[f"test_{family}_{metric}_vs_{other}"] = values - other_values
    out = {}
    for name, found in intervals(columns, resamples=resamples, seed=seed).items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = found.mean, found.low, found.high
    return out


def choose_play_next(
    sequences: Sequences | Histories,
    tracks: TrackFeatures,
    settings: PlayNextSettings = PlayNextSettings(),
    *,
    collaborative: Collaborative | None = None,
    track_ids: np.ndarray | None = None,
) -> PlayNext:
    """Fit every candidate on the training histories of a sample of the users
    (`max_fit_users`), pick the best on validation, report each family's test hit@k / MRR@k
    with intervals, and refit what is published on all histories: lists for every track of
    `track_ids` (default: every catalog track). `sequences` may be given as their Histories
    (`histories(sequences, tracks.track_ids)`), so that a caller need not hold both."""
    k, resamples, seed = settings.k, settings.bootstrap_samples, settings.seed
    catalog = tracks.track_ids
    h = sequences if isinstance(sequences, Histories) else histories(sequences, catalog)
    families = {POPULARITY, GENRE_POPULARITY} | ({COLLABORATIVE} if collaborative else set())
    # the candidates are fit and judged on a sample of the users; the published model on all
    fit = h.sampled(settings.max_fit_users, seed)

    # validation: fit without each user's last two listens, target the second-to-last
    val_seeds, val_targets = _sample(fit.held_out(2), settings.max_eval_users, seed)
    test_seeds, test_targets = _sample(fit.held_out(1), settings.max_eval_users, seed + 1)
    grid = _grid(settings, collaborative is not None)
    lists = _candidate_lists(fit.without_tail(2), tracks, grid, settings, collaborative, families)
    del fit
    val = {key: hits(ids, val_seeds, val_targets, k) for key, (ids, _, _) in lists.items()}
    best, winner = _choose(val)
    gate = difference(
        val[best[winner]][0], val[best[POPULARITY]][0], resamples=resamples, seed=seed
    )
    passed = winner != POPULARITY and gate.low > 0
    published = winner if passed else GENRE_POPULARITY
    metrics = {
        "k": float(k),
        "n_validation_pairs": float(len(val_seeds)),
        "gate_passed": float(passed),
        "gate_hit_diff": gate.mean,
        "gate_hit_diff_lo": gate.low,
        "gate_hit_diff_hi": gate.high,
    }
    for family, key in best.items():
        metrics[f"validation_{family}_hit"] = mean_or_nan(val[key][0])
        metrics[f"validation_{family}_mrr"] = mean_or_nan(val[key][1])

    # test: each family's chosen fit, blind to the last two listens, on the last listen (one
    # listen further on than validation, so no refit: nothing it was fit on is judged)
    test = {
        family: hits(lists[key][0], test_seeds, test_targets, k) for family, key in best.items()
    }
    del lists
    metrics["n_test_pairs"] = float(len(test_seeds))
    metrics.update(_test_metrics(test, resamples, seed))

    # publish: refit on all histories
    key = best[published]
    configs = [key] if isinstance(key, Config) else []
    sequence_families = {TRANSITIONS, CO_OCCURRENCE, BLEND}
    lists = _candidate_lists(
        h, tracks, configs, settings, collaborative, {published} - sequence_families
    )
    ids, scores, source = lists[key]
    rows = positions_of(catalog, catalog if track_ids is None else track_ids)
    missing = rows < 0  # not in the catalog: an empty list
    ids, scores, source = (
        np.where(missing[:, None], empty, a[rows])
        for a, empty in ((ids, -1), (scores, 0.0), (source, -1))
    )
    log.info("play next: winner %s, published %s (%s)", winner, published, _label(key))
    return PlayNext(
        model=published,
        winner=winner,
        config=_label(key),
        metrics={name: value for name, value in metrics.items() if np.isfinite(value)},
        track_ids=catalog if track_ids is None else np.asarray(track_ids, dtype=np.int64),
        ids=np.where(ids >= 0, catalog[np.maximum(ids, 0)], -1),
        scores=scores,
        source=source.astype(np.int8),
        candidates={family: _label(key) for family, key in best.items()},
    )


def _label(key: str | Config) -> str:
    return key.label() if isinstance(key, Config) else key


def filled_lists(
    counts: sp.csr_matrix, tracks: TrackFeatures, k: int, track_ids: np.ndarray, model: str
) -> PlayNext:
    """Lists of the fill alone (artist, genre, global) for `track_ids` (catalog tracks), on
    users x catalog tracks listens: the tracks a kept "play next" lacks (new since)."""
    rows = positions_of(tracks.track_ids, np.asarray(track_ids, dtype=np.int64))
    rows = rows[rows >= 0]
    ids, scores, source = fallbacks_of(counts, tracks, k).fill()
    ids, scores, source = ids[rows], scores[rows], source[rows]
    catalog = tracks.track_ids
    return PlayNext(
        model=model,
        winner=model,
        config="the fill (artist, genre, global) of tracks the kept lists lack",
        metrics={},
        track_ids=catalog[rows],
        ids=np.where(ids >= 0, catalog[np.maximum(ids, 0)], -1),
        scores=scores,
        source=source.astype(np.int8),
    )

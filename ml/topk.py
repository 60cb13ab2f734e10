"""Exact top-k by dot product without each user's own tracks, for every user at once: heads of
the longest item vectors ranked with numpy, every item on implicit's kernels (ml/README.md
"Performance notes"; bench/bench_ml.py measures it).

Ties: among equal scores the higher column comes first, and a cut through equal scores keeps
the higher columns (each row is its unheard columns sorted by score, then column, both
descending, cut at k): implicit's own order among equal scores, kept where its lists are cut
by widening them until no tie reaches their end."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk

FILTERED = -1e38  # implicit gives filtered slots a score of -FLT_MAX
HEAVY_QUANTILE = 99.0  # users above this quantile of heard tracks take the filtered path
PRUNE_SHARES = (0.01, 0.02, 0.03, 0.1)  # shares of the items (longest vectors) a query is ranked
# against in turn: at k = 10 most settle in the first, the re-rank's deep lists (k = 100) in
# the second or third; the rest try the next, then every item
PRUNE_SPARE = 50  # ... and at least k + this many
PRUNE_TOLERANCE = 1e-5  # float32 rounding allowance, relative to |query| x the longest item
PRUNE_PROBE = 2_000  # a head is first tried on this many rows (evenly spaced) ...
PRUNE_WORTH = 0.5  # ... and ranked for every row only if this share of them settles there
IN_ROWS_FLAGS = 32_000_000  # dense membership flags held by in_rows (bytes)
HEAD_CELLS = 4_000_000  # scores a head pass holds at once (rows x head items, float32)
RANKED_CHUNK = 20_000  # rows ranked at once by top_k_ranked and top_k's unfiltered tier:
# bounds their (rows x candidates) memory


def in_rows(matrix: sp.csr_matrix, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Whether ids[i, j] is a nonzero column of `matrix` row rows[i], for all i, j at once (-1
    never is): the rows' columns set in a dense block of flags, a chunk of rows at a time, and
    each cell looked up there (the flags are unset after each chunk, so the block is cleared
    once, not per chunk: at a million users x 100k tracks a clear per chunk would be most of
    the time)."""
    sub = matrix.tocsr()[np.asarray(rows)]
    ids = np.asarray(ids)
    out = np.zeros(np.shape(ids), dtype=bool)
    n_rows, width = sub.shape[0], max(sub.shape[1], 1)
    if n_rows == 0 or sub.nnz == 0 or out.size == 0:
        return out
    chunk = max(1, min(n_rows, IN_ROWS_FLAGS // width))
    flags = np.zeros((chunk, width), dtype=bool)
    for lo in range(0, n_rows, chunk):
        hi = min(lo + chunk, n_rows)
        start, stop = sub.indptr[lo], sub.indptr[hi]
        owner = np.repeat(np.arange(hi - lo), np.diff(sub.indptr[lo : hi + 1]))
        cols = sub.indices[start:stop]
        stored = sub.data[start:stop] != 0
        owner, cols = owner[stored], cols[stored]
        flags[owner, cols] = True
        wanted = ids[lo:hi]
        out[lo:hi] = flags[np.arange(hi - lo)[:, None], np.maximum(wanted, 0)] & (wanted >= 0)
        flags[owner, cols] = False
    return out


def _tiers(heard: np.ndarray, k: int, n_items: int) -> list[tuple[np.ndarray, int]]:
    """(rows, candidates per row) such that each row has at least k unheard candidates:
    most rows need k + the 99th percentile of heard tracks, the rest k + the maximum."""
    spare = int(np.percentile(heard, HEAVY_QUANTILE)) if len(heard) else 0
    light = heard <= spare
    tiers = [(np.flatnonzero(light), min(k + spare, n_items))]
    if not light.all():
        tiers.append((np.flatnonzero(~light), min(k + int(heard.max()), n_items)))
    return [(rows, wide) for rows, wide in tiers if len(rows)]


def _first_unheard(
    candidates: np.ndarray, values: np.ndarray, heard: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k candidates not in `heard` and their values (-1 / -inf past the end)."""
    skip = in_rows(heard, np.arange(len(candidates)), candidates)
    positions = np.argsort(skip, axis=1, kind="stable")[:, :k]  # unheard first, in order
    keep = ~np.take_along_axis(skip, positions, 1)
    ids = np.where(keep, np.take_along_axis(candidates, positions, 1), -1)
    return ids, np.where(keep, np.take_along_axis(values, positions, 1), -np.inf)


def top_k_ranked(
    rankings: np.ndarray, classes: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
) -> np.ndarray:
    """Top-k when every query row follows one of a few fixed rankings (popularity, overall or
    inside a genre): row i takes rankings[classes[i]] (best first), minus its `exclude` row.
    Returns ids (len(classes), k), -1 where fewer than k remain."""
    n, n_items = len(classes), rankings.shape[1]
    k = min(k, n_items)
    if exclude is None:
        return rankings[classes, :k].astype(np.int64)
    exclude = exclude.tocsr()
    ids = np.full((n, k), -1, dtype=np.int64)
    for rows, wide in _tiers(np.diff(exclude.indptr), k, n_items):
        for lo in range(0, len(rows), RANKED_CHUNK):
            part = rows[lo : lo + RANKED_CHUNK]
            candidates = rankings[classes[part], :wide].astype(np.int64)
            ids[part], _ = _first_unheard(candidates, candidates, exclude[part], k)  # no scores
    return ids


def _unfound(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of n rows with nothing found yet: -1 and -inf, as top_k returns them."""
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf)


def _head(order: np.ndarray, k: int, share: float) -> np.ndarray | None:
    """The `share` of the items with the longest vectors (`order`: longest first), longest
    first; None when pruning cannot pay."""
    n_items = len(order)
    size = max(int(np.ceil(n_items * share)), k + PRUNE_SPARE)
    if size >= n_items // 2:
        return None
    return order[:size]


def _sortable(values: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in the same order (-0.0 as 0.0); _unsortable inverts it."""
    bits = (values + np.float32(0)).view(np.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)


def _unsortable(keys: np.ndarray) -> np.ndarray:
    bits = keys.astype(np.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(np.float32)


def _head_ranked(
    items: np.ndarray,
    head: np.ndarray,
    query: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
) -> tuple[np.ndarray, np.ndarray]:
    """top_k among the `head` items (item ids, < 2**31) with numpy, HEAD_CELLS scores at a
    time: one product, the k-th unheard score by a partition, and a sort of the (score, id)
    keys that reach it (so ties go to the higher id, as in top_k). implicit's kernel selects
    k (+ heard) per row at a cost that grows with k: at the re-rank's k = 100 that selection,
    not the product, was the time."""
    n, width = len(query), len(head)
    kept = min(k, width)
    ids, scores = _unfound(n, k)
    if n == 0 or kept == 0:
        return ids, scores
    block = np.ascontiguousarray(items[head].T)
    position = np.full(len(items), -1, dtype=np.int64)
    position[head] = np.arange(width)
    lowest = np.finfo(np.float32).min  # a k-th score of -inf (too few unheard): finite ones
    step = max(1, HEAD_CELLS // width)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        values = query[lo:hi] @ block
        if exclude is not None:
            part = exclude[lo:hi]
            owner = np.repeat(np.arange(hi - lo), np.diff(part.indptr))
            cols = position[part.indices]
            heard = (cols >= 0) & (part.data != 0)
            values[owner[heard], cols[heard]] = -np.inf
        # the k-th unheard score among the longer half (longest first): at most the head's,
        # and close to it (the longest vectors score highest), so few more pass it
        half = max(kept, width // 2)
        kth = np.partition(values[:, :half], half - kept, axis=1)[:, half - kept]
        rows, cols = np.nonzero(values >= np.maximum(kth, lowest)[:, None])
        keys = (_sortable(values[rows, cols]) << 31) | head[cols]
        counts = np.bincount(rows, minlength=hi - lo)
        dense = np.full((hi - lo, max(kept, counts.max())), np.iinfo(np.int64).min)
        dense[rows, np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]] = keys
        dense.sort(axis=1)
        best = dense[:, : -kept - 1 : -1]  # the kept largest keys, largest first
        found = best > np.iinfo(np.int64).min
        ids[lo:hi, :kept] = np.where(found, best & 0x7FFFFFFF, -1)
        scores[lo:hi, :kept] = np.where(found, _unsortable(best >> 31), -np.inf)
    return ids, scores


def top_k(
    items: np.ndarray,
    query: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The k columns of `items` scoring highest against each row of `query`, minus those its
    `exclude` row holds: (ids int64, scores float64), (len(query), k), -1 / -inf where fewer
    remain, ties as the module says."""
    items = np.ascontiguousarray(items, dtype=np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    n_items = items.shape[0]
    k = min(k, n_items)
    exclude = None if exclude is None else exclude.tocsr()
    if not (len(query) and k):
        return _top_k_all(items, query, k, exclude, num_threads)
    norms = np.linalg.norm(items, axis=1)
    query_norms = np.linalg.norm(query, axis=1)
    margin = PRUNE_TOLERANCE * query_norms * norms.max()
    ids, scores = _unfound(len(query), k)
    todo, tried = np.arange(len(query)), 0

    def heard_by(rows: np.ndarray) -> sp.csr_matrix | None:
        """`exclude`'s rows for `rows` (a subset of todo, in order): no copy when all of them."""
        if exclude is None or len(rows) == len(query):
            return exclude
        return exclude[rows]

    def ranked_in(head: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows' top-k among the `head` items, and which are settled: their k-th unheard
        score beats any item left out (Cauchy-Schwarz)."""
        got, best = _head_ranked(items, head, query[rows], k, heard_by(rows))
        bound = query_norms[rows] * norms[order[len(head)]]  # the longest left out
        settled = best[:, k - 1] - margin[rows] > bound + margin[rows]
        return got, best, settled

    order = np.argsort(-norms, kind="stable")
    for share in PRUNE_SHARES:
        head = _head(order, k, share)
        if head is None or len(head) <= tried or not len(todo):
            continue
        if len(todo) > PRUNE_PROBE:  # a pass that settles few rows costs more than it saves
            probe = todo[np.linspace(0, len(todo) - 1, PRUNE_PROBE).astype(np.int64)]
            if ranked_in(head, probe)[2].mean() < PRUNE_WORTH:
                continue
        tried = len(head)
        got, best, settled = ranked_in(head, todo)
        done = todo[settled]
        ids[done], scores[done] = got[settled], best[settled]
        todo = todo[~settled]
    if len(todo):
        ids[todo], scores[todo] = _top_k_all(items, query[todo], k, heard_by(todo), num_threads)
    return ids, scores


def _tie_ordered(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ranked rows (best first) with equal scores put the higher column first (its
    own order among ties, enforced): only the rows holding a tie are sorted."""
    tied = np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1))
    if len(tied):
        order = np.lexsort((-ids[tied], -values[tied]), axis=1)
        ids[tied] = np.take_along_axis(ids[tied], order, 1)
        values[tied] = np.take_along_axis(values[tied], order, 1)
    return ids, values


def _ranked(
    items: np.ndarray, query: np.ndarray, wide: int, num_threads: int, **filters: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """implicit's top `wide` (ids int64, scores float64), ties in order."""
    found, values = topk(items, query, wide, num_threads=num_threads, **filters)
    return _tie_ordered(np.asarray(found, dtype=np.int64), np.asarray(values, dtype=np.float64))


def _filtered(
    items: np.ndarray,
    query: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    num_threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """top_k against every item on implicit's filtered kernel, asking for more than k: a row
    whose k-th score equals the last one returned (the cut may fall inside a tie) is asked
    again for twice as many."""
    n, n_items = query.shape[0], items.shape[0]
    ids, scores = _unfound(n, k)
    todo, wide = np.arange(n), min(k + 1, n_items)
    while len(todo):
        heard = {} if exclude is None else {"filter_query_items": exclude[todo]}
        found, values = _ranked(items, query[todo], wide, num_threads, **heard)
        cut = (values[:, k - 1] == values[:, wide - 1]) & (values[:, k - 1] > FILTERED)
        cut &= wide < n_items
        done = todo[~cut]
        missing = values[~cut, :k] <= FILTERED
        ids[done] = np.where(missing, -1, found[~cut, :k])
        scores[done] = np.where(missing, -np.inf, values[~cut, :k])
        todo, wide = todo[cut], min(2 * wide, n_items)
    return ids, scores


def _top_k_all(
    items: np.ndarray,
    query: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    num_threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """top_k against every item."""
    n, n_items = query.shape[0], items.shape[0]
    ids, scores = _unfound(n, k)
    if n == 0 or k == 0:
        return ids, scores
    if exclude is None:
        return _filtered(items, query, k, None, num_threads)

    again = []  # rows of the unfiltered tier whose wide list may cut a tie (the k-th unheard
    # score is the last's): ranked on the filtered kernel instead, with the heavy listeners
    for tier, (rows, wide) in enumerate(_tiers(np.diff(exclude.indptr), k, n_items)):
        if tier == 0:  # most users: unfiltered kernel, then drop the heard candidates
            wide = min(wide + 1, n_items)  # one more: the k-th unheard is never the last
            for lo in range(0, len(rows), RANKED_CHUNK):  # bounds the wide candidates' memory
                part = rows[lo : lo + RANKED_CHUNK]
                found, values = _ranked(items, query[part], wide, num_threads)
                ids[part], scores[part] = _first_unheard(found, values, exclude[part], k)
                if wide < n_items:
                    again.append(part[scores[part, k - 1] == values[:, wide - 1]])
        else:  # the heavy listeners: implicit's filtered path, few users
            again.append(rows)
    rows = np.concatenate(again) if again else np.zeros(0, dtype=np.int64)
    if len(rows):
        ids[rows], scores[rows] = _filtered(items, query[rows], k, exclude[rows], num_threads)
    return ids, scores

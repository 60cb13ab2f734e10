"""What every fitted recommender offers (top-k per user, similar tracks, fold-in of one listener,
save/load with nothing pickled), and the exact top-k the families without factors rank with:
of dense score blocks chunked over users to bound memory (EASE), of sparse rows (item kNN's
kept neighbours)."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ml.topk import FILTERED

MODEL_FILE, PARAMS_FILE = "model.npz", "params.json"
CHUNK_CELLS = 1 << 24  # users x tracks scores held at once (64 MB of float32)
SPARSE_CHUNK = 2_000_000  # stored scores sorted at once by sparse_top_k


def single_threaded_blas() -> threadpool_limits:
    """OPENBLAS_NUM_THREADS=1 for numpy already loaded (ml/__init__ sets it for new processes):
    implicit parallelises with OpenMP, and a multi-threaded BLAS underneath slows it down."""
    return threadpool_limits(limits=1, user_api="blas")


class FamilySkipped(Exception):
    """This family cannot fit these data (e.g. too many tracks for a dense model): the reason."""


class OverBudget(FamilySkipped):
    """The fit was stopped, or not started, because it would end after its deadline;
    `expected_seconds` is what the whole fit would have taken (the next search's guess)."""

    def __init__(self, message: str, expected_seconds: float) -> None:
        super().__init__(message)
        self.expected_seconds = expected_seconds


def stop_at(deadline: float | None, iterations: int) -> Callable[..., None] | None:
    """A fit callback (implicit's `callback(iteration, ...)`, called after each of the fit's
    `iterations`) that stops the fit once `time.monotonic()` passes `deadline`; None: no
    limit."""
    if deadline is None:
        return None
    started = time.monotonic()

    def check(iteration: int, *_: Any) -> None:
        now = time.monotonic()
        if now > deadline:
            expected = (now - started) / (iteration + 1) * iterations
            raise OverBudget(
                f"stopped after {iteration + 1} of {iterations} iterations: over the time "
                f"budget (the fit would take ~{expected:.0f}s)",
                expected,
            )

    return check


class Recommender(ABC):
    """A fitted model of one family. `recommend` and `similar` return (ids int64, scores
    float64) shaped (rows, k), best first, -1 / -inf in slots nothing is left for."""

    params: Any
    fit_seconds: float
    warm_start: bool  # continued from another fit, not from scratch

    @property
    @abstractmethod
    def n_tracks(self) -> int:
        """The tracks (columns) the model knows."""

    @abstractmethod
    def recommend(
        self, rows: np.ndarray, heard: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k tracks for users `rows`, none that `heard` (the users x tracks listen counts
        the model was fit on, or newer) holds for them; families without user factors score
        from those counts."""

    @abstractmethod
    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k tracks most similar to every track, itself excluded: (tracks, k)."""

    @abstractmethod
    def fold_in(self, counts_row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids, scores), each (k,), for a listener known only by `counts_row` (1 x
        tracks listen counts), none of its tracks."""

    @abstractmethod
    def save_model(self, path: Path) -> None:
        """The fitted state to `path` (.npz, nothing pickled)."""

    def save(self, directory: Path) -> None:
        """The model (MODEL_FILE) and its params (PARAMS_FILE) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.save_model(directory / MODEL_FILE)
        text = json.dumps(self.params.to_json(), indent=2, sort_keys=True)
        (directory / PARAMS_FILE).write_text(text, encoding="utf-8")


def heard_cells(heard: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(heard.shape[0]), np.diff(heard.indptr)), heard.indices


def dense_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k highest scores that are finite, best first: (ids, scores), -1 / -inf
    past the last finite one. `scores` is reordered in place."""
    n, n_items = scores.shape
    k = min(k, n_items)
    if n == 0 or k == 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf)
    np.nan_to_num(scores, copy=False, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)
    best = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
    values = np.take_along_axis(scores, best, 1).astype(np.float64)
    order = np.argsort(-values, axis=1, kind="stable")
    ids = np.take_along_axis(best, order, 1).astype(np.int64)
    values = np.take_along_axis(values, order, 1)
    missing = ~np.isfinite(values)
    return np.where(missing, -1, ids), np.where(missing, -np.inf, values)


def sparse_top_k(scores: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k highest stored scores, best first (ties: lower column first): (ids,
    scores), -1 / -inf past the last stored one. One sort per block of rows holding about
    SPARSE_CHUNK stored entries (a sort's index arrays are several times its block's size), of
    one 64-bit key per entry: the row, then the score's order as 32 bits (descending_bits)."""
    scores = sp.csr_matrix(scores, dtype=np.float32)  # ranked as float32, like the families'
    if not scores.has_sorted_indices:
        scores = scores.sorted_indices()  # ties then keep the lower column first (stable sort)
    n = scores.shape[0]
    k = min(k, scores.shape[1])
    ids, values = np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf)
    for lo, hi in row_blocks(scores.indptr, SPARSE_CHUNK):
        first, last = scores.indptr[lo], scores.indptr[hi]
        data, indices = scores.data[first:last], scores.indices[first:last]
        rows = np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(scores.indptr[lo : hi + 1]))
        order = np.argsort((rows << 32) | descending_bits(data), kind="stable")
        rank = np.arange(len(order)) - (scores.indptr[lo + rows] - first)  # rows: sorted
        top = rank < k
        keep = order[top]
        ids[lo + rows[top], rank[top]] = indices[keep]
        values[lo + rows[top], rank[top]] = data[keep]
    return ids, values


def descending_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as int64 keys in [0, 2**32) that sort them best first: a larger value
    gets a smaller key, equal values (0.0 and -0.0 too) the same key (NaN not expected)."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0 -> 0
    negative = bits >= np.uint32(0x80000000)
    return np.where(negative, bits, np.uint32(0x7FFFFFFF) - bits).astype(np.int64)


def row_blocks(indptr: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges of a CSR matrix (its `indptr`) each holding at most `budget`
    stored entries, or a single row that holds more."""
    n, blocks, lo = len(indptr) - 1, [], 0
    while lo < n:
        hi = int(np.searchsorted(indptr, indptr[lo] + budget, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        blocks.append((lo, hi))
        lo = hi
    return blocks


def chunked_top_k(
    score: Callable[[np.ndarray, sp.csr_matrix], np.ndarray],
    rows: np.ndarray,
    heard: sp.csr_matrix,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """dense_top_k of score(chunk, heard[chunk]) (chunk x tracks float32, -inf = not a
    candidate) over chunks of `rows`, with the tracks `heard` holds for each row masked out."""
    rows = np.asarray(rows, dtype=np.int64)
    heard = heard.tocsr()
    n_items = heard.shape[1]
    k = min(k, n_items)
    ids = np.full((len(rows), k), -1, dtype=np.int64)
    scores = np.full((len(rows), k), -np.inf)
    step = max(1, CHUNK_CELLS // max(n_items, 1))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        part = heard[chunk]
        block = score(chunk, part)
        block[heard_cells(part)] = -np.inf
        ids[start : start + step], scores[start : start + step] = dense_top_k(block, k)
    return ids, scores


def padded(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """implicit's single-user answer as (k,) arrays, -1 / -inf where it filtered or ran out."""
    out_ids, out_scores = np.full(k, -1, dtype=np.int64), np.full(k, -np.inf)
    keep = (ids >= 0) & (scores > FILTERED) & np.isfinite(scores)
    n = min(int(keep.sum()), k)
    out_ids[:n], out_scores[:n] = ids[keep][:n], scores[keep][:n]
    return out_ids, out_scores

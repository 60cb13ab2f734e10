"""The ALS model: confidences from listen counts, fitting, recommending, similar tracks.

implicit's CPU AlternatingLeastSquares, explicitly (`use_gpu=False`), with a fixed random_state.
BLAS runs single-threaded inside `single_threaded_blas()`: implicit parallelises with OpenMP
itself, and a multi-threaded OpenBLAS underneath makes fit and recommend several times slower.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight
from threadpoolctl import threadpool_limits

from ml.config import ModelParams
from ml.topk import top_k

log = logging.getLogger(__name__)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OPENBLAS_NUM_THREADS=1 for numpy already loaded (ml/__init__ sets it for new processes)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def confidence(counts: sp.csr_matrix, params: ModelParams) -> sp.csr_matrix:
    """Listen counts (users x tracks) -> ALS confidences (users x tracks, float32).

    bm25: implicit's bm25_weight on the tracks x users matrix, as in implicit's own examples:
          a track's weight for a user grows with the user's plays of it and is damped for users
          who play a lot of tracks (K1, B as configured).
    log:  log(1 + count): a repeat listen counts, with diminishing returns.
    raw:  the count itself.
    ALS then multiplies the confidences by `alpha`.
    """
    if params.confidence == "bm25":
        weighted = bm25_weight(counts.T.tocsr(), K1=params.bm25_k1, B=params.bm25_b)
        out = weighted.T.tocsr().astype(np.float32)
    elif params.confidence == "log":
        out = counts.astype(np.float32, copy=True)
        np.log1p(out.data, out=out.data)
    else:
        out = counts.astype(np.float32, copy=True)
    out.sort_indices()
    return out


@dataclass
class FittedModel:
    params: ModelParams
    als: AlternatingLeastSquares
    fit_seconds: float


def new_als(params: ModelParams, num_threads: int) -> AlternatingLeastSquares:
    return AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_state,
        num_threads=num_threads,
        dtype=np.float32,
    )


def fit(counts: sp.csr_matrix, params: ModelParams, num_threads: int = 0) -> FittedModel:
    """A new model of these parameters fit on these listen counts."""
    started = time.perf_counter()
    als = new_als(params, num_threads)
    with single_threaded_blas():
        als.fit(confidence(counts, params), show_progress=False)
    seconds = time.perf_counter() - started
    log.debug("fit %s in %.2fs", params.label(), seconds)
    return FittedModel(params, als, seconds)


def recommend(
    als: AlternatingLeastSquares, rows: np.ndarray, heard: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per user row, excluding what `heard` (users x tracks) holds for them:
    what implicit's recommend(filter_already_liked_items=True) returns, faster (ml.topk).

    Returns (ids, scores), both (len(rows), k); slots with nothing left to recommend hold -1.
    """
    with single_threaded_blas():
        return top_k(
            als.item_factors, als.user_factors[rows], k, heard[rows], num_threads=als.num_threads
        )


def similar(als: AlternatingLeastSquares, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar tracks (cosine of item factors) of every track, itself excluded."""
    n_items = als.item_factors.shape[0]
    k = min(k, n_items - 1)
    if k <= 0:
        return np.empty((n_items, 0), np.int64), np.empty((n_items, 0))
    with single_threaded_blas():
        ids, scores = als.similar_items(np.arange(n_items), N=k + 1)
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    # drop each track itself (usually first, but not for a zero vector), keep the order
    is_self = ids == np.arange(n_items)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)

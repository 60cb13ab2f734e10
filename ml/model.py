"""The ALS model: implicit's CPU AlternatingLeastSquares (fixed random_state) on confidences
from listen counts, its warm refit, top-k and similar tracks. BLAS runs single-threaded around
it: implicit parallelises with OpenMP, and a multi-threaded OpenBLAS underneath slows it down."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight
from threadpoolctl import threadpool_limits

from ml.config import SIMILAR_SCORINGS
from ml.params import ModelParams
from ml.topk import top_k

log = logging.getLogger(__name__)
REFIT_ITERATIONS = 2  # the serving model: the winner's training-split fit continued on all data


def single_threaded_blas() -> threadpool_limits:
    """OPENBLAS_NUM_THREADS=1 for numpy already loaded (ml/__init__ sets it for new processes),
    as a context manager (threadpoolctl's own)."""
    return threadpool_limits(limits=1, user_api="blas")


def confidence(counts: sp.csr_matrix, params: ModelParams) -> sp.csr_matrix:
    """Listen counts (users x tracks) -> confidences (float32), which ALS multiplies by alpha:
    `bm25` implicit's bm25_weight on the tracks x users matrix (as in implicit's examples),
    `log` log(1 + count), `raw` the count."""
    if params.confidence == "bm25":
        weighted = bm25_weight(counts.T.tocsr(), K1=params.bm25_k1, B=params.bm25_b)
        out = weighted.T.tocsr().astype(np.float32)
    else:
        out = counts.astype(np.float32, copy=True)
        if params.confidence == "log":
            np.log1p(out.data, out=out.data)
    out.sort_indices()
    return out


@dataclass
class FittedModel:
    params: ModelParams
    als: AlternatingLeastSquares
    fit_seconds: float
    warm_start: bool = False  # continued from another fit, not from random factors


def new_als(params: ModelParams, num_threads: int) -> AlternatingLeastSquares:
    names = {"factors", "regularization", "alpha", "iterations", "random_state"}
    hyper = params.model_dump(include=names)
    return AlternatingLeastSquares(**hyper, num_threads=num_threads, dtype=np.float32)


def fit(
    counts: sp.csr_matrix,
    params: ModelParams,
    num_threads: int = 0,
    start: FittedModel | None = None,
    callback: Callable[..., None] | None = None,
) -> FittedModel:
    """A model of these parameters fit on these listen counts: from random factors, or with a
    `start` of the same parameters and shapes (the training-split fit, left unchanged) continued
    REFIT_ITERATIONS iterations from a copy of its factors, already close (the serving model).
    `callback` is implicit's, called after each iteration (it may raise to stop the fit)."""
    started = time.perf_counter()
    als = new_als(params, num_threads)
    same = start is not None and start.params == params
    factors = (start.als.user_factors, start.als.item_factors) if start and same else (None, None)
    warm = all(
        getattr(f, "shape", None) == (n, params.factors)
        for f, n in zip(factors, counts.shape, strict=True)
    )
    if warm:
        als.iterations = REFIT_ITERATIONS
        als.user_factors, als.item_factors = (np.array(f) for f in factors)  # copies
    with single_threaded_blas():
        als.fit(confidence(counts, params), show_progress=False, callback=callback)
    als.iterations = params.iterations  # a continued model still saves its parameters
    seconds = time.perf_counter() - started
    log.debug("fit %s in %.2fs (warm: %s)", params.label(), seconds, warm)
    return FittedModel(params, als, seconds, warm)


def recommend(
    als: AlternatingLeastSquares, rows: np.ndarray, heard: sp.csr_matrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per user row without what `heard` holds for them, as implicit's
    recommend(filter_already_liked_items=True): (ids, scores), (len(rows), k), -1 = none left."""
    with single_threaded_blas():
        return top_k(
            als.item_factors, als.user_factors[rows], k, heard[rows], num_threads=als.num_threads
        )


def similar(
    als: AlternatingLeastSquares, k: int, scoring: str = "dot"
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar tracks of every track, itself excluded, best first: (ids, scores),
    (tracks, k), exact (ml.topk). `dot` x_i . x_j (close and popular: what ALS would score),
    `cosine` the direction alone (popularity normalised away; ml/README.md compares them)."""
    if scoring not in SIMILAR_SCORINGS:
        raise ValueError(f"unknown similar scoring {scoring!r} (known: {SIMILAR_SCORINGS})")
    items = np.ascontiguousarray(als.item_factors, dtype=np.float32)
    n_items = items.shape[0]
    k = max(min(k, n_items - 1), 0)
    if scoring == "cosine":
        norms = np.linalg.norm(items, axis=1, keepdims=True)
        items = items / np.maximum(norms, np.finfo(np.float32).tiny)
    itself = sp.identity(n_items, dtype=np.float32, format="csr")
    with single_threaded_blas():
        return top_k(items, items, k, itself, num_threads=als.num_threads, prune=scoring == "dot")

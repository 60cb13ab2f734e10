"""The factor families: implicit's ALS (on confidences from listen counts, with a warm refit),
BPR and LMF. All rank by user x item factor dot products (ml.topk, exact); the item factors of
BPR and LMF carry their bias columns, so the plain dot is the model's own score."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.cpu.lmf import LogisticMatrixFactorization
from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase
from implicit.nearest_neighbours import bm25_weight

from ml.families.base import Recommender, dense_top_k, padded, single_threaded_blas, stop_at
from ml.params import AlsParams, BprParams, LmfParams, ModelParams
from ml.topk import top_k

log = logging.getLogger(__name__)
FactorParams = AlsParams | BprParams | LmfParams
IMPLICIT_CLASSES: dict[str, type[MatrixFactorizationBase]] = {
    "als": AlternatingLeastSquares,
    "bpr": BayesianPersonalizedRanking,
    "lmf": LogisticMatrixFactorization,
}
REFIT_ITERATIONS = 2  # the serving model: the winner's training-split fit continued on all data


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


def new_implicit(params: FactorParams, num_threads: int) -> MatrixFactorizationBase:
    """implicit's unfitted CPU model of these params (ALS's confidence keys are not its own)."""
    hyper = params.model_dump(exclude={"family", "confidence", "bm25_k1", "bm25_b"})
    return IMPLICIT_CLASSES[params.family](**hyper, num_threads=num_threads, dtype=np.float32)


@dataclass
class FactorModel(Recommender):
    params: FactorParams
    model: MatrixFactorizationBase  # implicit's fitted CPU model
    fit_seconds: float
    warm_start: bool = False

    @property
    def n_tracks(self) -> int:
        return len(self.model.item_factors)

    def recommend(
        self, rows: np.ndarray, heard: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """As implicit's recommend(filter_already_liked_items=True), exact (ml.topk)."""
        factors, threads = self.model.user_factors[rows], self.model.num_threads
        with single_threaded_blas():
            return top_k(self.model.item_factors, factors, k, heard[rows], num_threads=threads)

    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """By the dot product of the item factors (close and popular: what the model would
        score), exact (ml.topk)."""
        items = self.model.item_factors
        itself = sp.identity(len(items), dtype=np.float32, format="csr")
        k = max(min(k, len(items) - 1), 0)
        with single_threaded_blas():
            return top_k(items, items, k, itself, num_threads=self.model.num_threads)

    def fold_in(self, counts_row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """ALS: the user's factors solved from the row's confidences (implicit's
        recalculate_user; bm25 falls back to log, one row has no corpus to weight by).
        BPR and LMF have no such solve: the user is the mean of the item factors of the
        tracks heard, with the bias columns set as the model sets a user's: an approximation
        (it ranks by mean similarity to the tracks heard), not the model's own fit. BLAS
        as the caller limited it (serving does once per process)."""
        row = counts_row.tocsr().astype(np.float32)
        if isinstance(self.params, AlsParams):
            params = self.params
            if params.confidence == "bm25":
                params = params.model_copy(update={"confidence": "log"})
            weights = confidence(row, params)
            ids, scores = self.model.recommend(0, weights, N=k, recalculate_user=True)
            return padded(np.asarray(ids), np.asarray(scores), min(k, row.shape[1]))
        items = self.model.item_factors
        user = items[row.indices].mean(axis=0) if row.nnz else np.zeros(items.shape[1])
        if isinstance(self.params, BprParams):
            user[-1] = 1.0  # BPR: the item bias column is the last, a user's is 1
        else:
            user[-2:] = (1.0, 0.0)  # LMF: item bias at -2 (user's 1), user bias at -1 (no rank)
        scores = (items @ user.astype(items.dtype))[None, :]
        scores[0, row.indices] = -np.inf
        ids, best = dense_top_k(scores, k)
        return ids[0], best[0]

    def save_model(self, path: Path) -> None:
        self.model.save(str(path))


def fit_factors(
    counts: sp.csr_matrix,
    params: FactorParams,
    num_threads: int = 0,
    start: FactorModel | None = None,
    deadline: float | None = None,
) -> FactorModel:
    """ALS on confidences, from random factors, or continued REFIT_ITERATIONS iterations from a
    copy of the factors of `start` (an ALS fit of the same params and tracks, left unchanged:
    the serving model; fit on other users, e.g. a sample, every user's factors are first
    solved from its track factors); BPR (listens > 0 as positives) and LMF (counts as
    weights) from scratch. Past `deadline` (time.monotonic()) the fit stops after its current
    iteration (OverBudget)."""
    started = time.perf_counter()
    model = new_implicit(params, num_threads)
    warm = False
    if isinstance(params, AlsParams):
        data = confidence(counts, params)
        if start is not None and start.params == params:
            users, items = start.model.user_factors, start.model.item_factors
            warm = items.shape == (counts.shape[1], params.factors)
        if warm:
            model.iterations = REFIT_ITERATIONS
            if users.shape[0] != counts.shape[0]:  # implicit's least squares of every user
                with single_threaded_blas():
                    users = start.model.recalculate_user(np.arange(counts.shape[0]), data)
            model.user_factors, model.item_factors = np.array(users), np.array(items)  # copies
    else:
        data = counts.tocsr().astype(np.float32)
    with single_threaded_blas():
        model.fit(data, show_progress=False, callback=stop_at(deadline, params.iterations))
    model.iterations = params.iterations  # a continued model still saves its parameters
    seconds = time.perf_counter() - started
    log.debug("fit %s in %.2fs (warm: %s)", params.label(), seconds, warm)
    return FactorModel(params, model, seconds, warm)


def load_factors(path: Path, params: FactorParams) -> FactorModel:
    """implicit's own load (np.load with allow_pickle=False) of the family's class."""
    model = IMPLICIT_CLASSES[params.family].load(str(path))
    return FactorModel(params, model, fit_seconds=0.0)

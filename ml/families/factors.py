"""The factor families: implicit's ALS (ml.model: confidences, warm continuation), BPR and LMF.
All rank by user x item factor dot products (ml.topk, exact); the item factors of BPR and LMF
carry their bias columns, so the plain dot is the model's own score."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.cpu.lmf import LogisticMatrixFactorization
from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase

from ml import model as als_model
from ml.families.base import Recommender, dense_top_k, padded, stop_at
from ml.params import AlsParams, BprParams, LmfParams

FactorParams = AlsParams | BprParams | LmfParams
IMPLICIT_CLASSES: dict[str, type[MatrixFactorizationBase]] = {
    "als": AlternatingLeastSquares,
    "bpr": BayesianPersonalizedRanking,
    "lmf": LogisticMatrixFactorization,
}


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
        return als_model.recommend(self.model, rows, heard, k)  # type: ignore[arg-type]

    def similar(self, k: int, scoring: str = "dot") -> tuple[np.ndarray, np.ndarray]:
        """`dot` or `cosine` of the item factors (ml.model.similar)."""
        return als_model.similar(self.model, k, scoring)  # type: ignore[arg-type]

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
            weights = als_model.confidence(row, params)
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
    """ALS through ml.model.fit (warm from `start` when it is an ALS fit of the same params and
    shapes); BPR (listens > 0 as positives) and LMF (counts as weights) from scratch. Past
    `deadline` (time.monotonic()) the fit stops after its current iteration (OverBudget)."""
    if isinstance(params, AlsParams):
        begun = None
        if start is not None and isinstance(start.model, AlternatingLeastSquares):
            begun = als_model.FittedModel(start.params, start.model, start.fit_seconds)
        stop = stop_at(deadline, params.iterations)
        fitted = als_model.fit(counts, params, num_threads, start=begun, callback=stop)
        return FactorModel(params, fitted.als, fitted.fit_seconds, fitted.warm_start)
    started = time.perf_counter()
    hyper = params.model_dump(exclude={"family"})
    model = IMPLICIT_CLASSES[params.family](**hyper, num_threads=num_threads, dtype=np.float32)
    with als_model.single_threaded_blas():
        stop = stop_at(deadline, params.iterations)
        model.fit(counts.tocsr().astype(np.float32), show_progress=False, callback=stop)
    return FactorModel(params, model, time.perf_counter() - started)


def load_factors(path: Path, params: FactorParams) -> FactorModel:
    """implicit's own load (np.load with allow_pickle=False) of the family's class."""
    model = IMPLICIT_CLASSES[params.family].load(str(path))
    return FactorModel(params, model, fit_seconds=0.0)

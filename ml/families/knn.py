"""Item-item nearest neighbours: implicit's BM25 / cosine / TF-IDF recommenders. A user's
score for a track is the sum, over the tracks they heard (listen counts as weights), of the
similarity kept between the two; only tracks with a positive score are candidates. (implicit's
recommend pads a short list with score-0 tracks, heard ones included: they are dropped.)"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import (
    BM25Recommender,
    CosineRecommender,
    ItemItemRecommender,
    TFIDFRecommender,
)

from ml.families.base import Recommender, sparse_top_k
from ml.params import ItemKnnParams

CLASSES: dict[str, type[ItemItemRecommender]] = {
    "bm25": BM25Recommender,
    "cosine": CosineRecommender,
    "tfidf": TFIDFRecommender,
}


def _without(scores: sp.csr_matrix, heard: sp.csr_matrix) -> sp.csr_matrix:
    """`scores` without the entries `heard` holds (similarities are positive: none is 0)."""
    out = (scores - scores.multiply(heard.astype(bool))).tocsr()
    out.eliminate_zeros()
    return out


def _scored(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """implicit's lists (best first) without their padding: the slots from the first score
    that is not positive on are -1 / -inf."""
    missing = (ids < 0) | ~(scores > 0)
    return np.where(missing, -1, ids), np.where(missing, -np.inf, scores)


@dataclass
class ItemKnnModel(Recommender):
    params: ItemKnnParams
    model: ItemItemRecommender
    fit_seconds: float
    warm_start: bool = False

    @property
    def n_tracks(self) -> int:
        return self.model.similarity.shape[0]

    def recommend(
        self, rows: np.ndarray, heard: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """implicit's batched recommend(filter_already_liked_items=True), the heard counts as
        the users' items (its scorer is faster than a sparse product and a sort here)."""
        rows = np.asarray(rows, dtype=np.int64)
        k = min(k, self.n_tracks)
        if len(rows) == 0 or k == 0:
            return np.full((len(rows), k), -1, dtype=np.int64), np.full((len(rows), k), -np.inf)
        user_items = heard.tocsr()[rows].astype(np.float32)
        ids, scores = self.model.recommend(rows, user_items, N=k, filter_already_liked_items=True)
        return _scored(np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64))

    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each track's kept neighbours (implicit's similar_items), itself excluded."""
        similarity = self.model.similarity.tocsr().astype(np.float32)
        itself = sp.identity(self.n_tracks, dtype=np.float32, format="csr")
        return sparse_top_k(_without(similarity, itself), max(min(k, self.n_tracks - 1), 0))

    def fold_in(self, counts_row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """implicit's recommend with the row as the user's items (exact)."""
        row = counts_row.tocsr().astype(np.float32)
        ids, scores = self.recommend(np.zeros(1, dtype=np.int64), row, k)
        return ids[0], scores[0]

    def save_model(self, path: Path) -> None:
        self.model.save(str(path))


def fit_item_knn(
    counts: sp.csr_matrix, params: ItemKnnParams, num_threads: int = 0
) -> ItemKnnModel:
    started = time.perf_counter()
    bm25 = {"K1": params.bm25_k1, "B": params.bm25_b} if params.weighting == "bm25" else {}
    model = CLASSES[params.weighting](K=params.neighbours, num_threads=num_threads, **bm25)
    with warnings.catch_warnings():  # its fit hands its own weighting a COO matrix, and warns
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(counts.tocsr().astype(np.float32), show_progress=False)
    return ItemKnnModel(params, model, time.perf_counter() - started)


def load_item_knn(path: Path, params: ItemKnnParams) -> ItemKnnModel:
    """implicit's own load (allow_pickle=False); the weighting only mattered to the fit."""
    return ItemKnnModel(params, CLASSES[params.weighting].load(str(path)), fit_seconds=0.0)

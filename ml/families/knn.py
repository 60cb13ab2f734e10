"""Item-item nearest neighbours: implicit's BM25 / cosine / TF-IDF recommenders. A user's
score for a track is the sum, over the tracks they heard (listen counts as weights), of the
similarity kept between the two; tracks no neighbour reaches are not candidates."""

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

from ml.families.base import Recommender, chunked_top_k, padded
from ml.params import ItemKnnParams

CLASSES: dict[str, type[ItemItemRecommender]] = {
    "bm25": BM25Recommender,
    "cosine": CosineRecommender,
    "tfidf": TFIDFRecommender,
}


def _dense(matrix: sp.csr_matrix) -> np.ndarray:
    """A sparse score block as dense float32, -inf where nothing was stored."""
    out = np.full(matrix.shape, -np.inf, dtype=np.float32)
    matrix = matrix.tocoo()
    out[matrix.row, matrix.col] = matrix.data
    return out


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
        """What implicit's recommend(filter_already_liked_items=True) ranks, for a block of
        users at once (a sparse product) rather than its loop over users."""
        similarity = self.model.similarity
        return chunked_top_k(
            lambda _, part: _dense(part.astype(np.float32) @ similarity), rows, heard, k
        )

    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each track's kept neighbours (implicit's similar_items), itself excluded."""
        similarity = self.model.similarity.tocsr().astype(np.float32)
        n_items = similarity.shape[0]
        itself = sp.identity(n_items, dtype=np.float32, format="csr")
        k = max(min(k, n_items - 1), 0)
        return chunked_top_k(
            lambda chunk, _: _dense(similarity[chunk]), np.arange(n_items), itself, k
        )

    def fold_in(self, counts_row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """implicit's own recommend with the row as the user's items (exact)."""
        row = counts_row.tocsr().astype(np.float32)
        k = min(k, row.shape[1])
        ids, scores = self.model.recommend(0, row, N=k, filter_already_liked_items=True)
        return padded(np.asarray(ids), np.asarray(scores), k)

    def save_model(self, path: Path) -> None:
        self.model.save(str(path))


def fit_item_knn(
    counts: sp.csr_matrix, params: ItemKnnParams, num_threads: int = 0
) -> ItemKnnModel:
    started = time.perf_counter()
    cls = CLASSES[params.weighting]
    if params.weighting == "bm25":
        model = BM25Recommender(
            K=params.neighbours, K1=params.bm25_k1, B=params.bm25_b, num_threads=num_threads
        )
    else:
        model = cls(K=params.neighbours, num_threads=num_threads)
    with warnings.catch_warnings():  # its fit hands its own weighting a COO matrix, and warns
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(counts.tocsr().astype(np.float32), show_progress=False)
    return ItemKnnModel(params, model, time.perf_counter() - started)


def load_item_knn(path: Path, params: ItemKnnParams) -> ItemKnnModel:
    """implicit's own load (allow_pickle=False); the weighting only mattered to the fit."""
    return ItemKnnModel(params, CLASSES[params.weighting].load(str(path)), fit_seconds=0.0)

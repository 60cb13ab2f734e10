"""Item-item nearest neighbours: implicit's BM25 / cosine / TF-IDF recommenders. A user's
score for a track is the sum, over the tracks they heard (listen counts as weights), of the
similarity kept between the two; tracks no neighbour reaches are not candidates."""

from __future__ import annotations

import itertools
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

from ml.families.base import CHUNK_CELLS, Recommender, padded, sparse_top_k
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


def _spans(sizes: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) runs of items whose sizes add up to about `budget` each."""
    if len(sizes) == 0:
        return []
    total = np.cumsum(sizes)
    starts = np.unique(np.searchsorted(total, np.arange(0, total[-1], budget), side="right"))
    return list(itertools.pairwise([*starts.tolist(), len(sizes)]))


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
        users at once (a sparse product, a sort of its entries) rather than its loop over
        users."""
        rows = np.asarray(rows, dtype=np.int64)
        heard = heard.tocsr()
        similarity = self.model.similarity
        ids = np.full((len(rows), min(k, self.n_tracks)), -1, dtype=np.int64)
        scores = np.full(ids.shape, -np.inf)
        # a user's candidates: at most `neighbours` per track heard
        reach = np.minimum(np.diff(heard.indptr)[rows] * self.params.neighbours, self.n_tracks)
        for start, end in _spans(reach + 1, CHUNK_CELLS):
            part = heard[rows[start:end]].astype(np.float32)
            ids[start:end], scores[start:end] = sparse_top_k(_without(part @ similarity, part), k)
        return ids, scores

    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each track's kept neighbours (implicit's similar_items), itself excluded."""
        similarity = self.model.similarity.tocsr().astype(np.float32)
        itself = sp.identity(self.n_tracks, dtype=np.float32, format="csr")
        return sparse_top_k(_without(similarity, itself), max(min(k, self.n_tracks - 1), 0))

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

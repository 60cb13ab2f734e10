"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): a tracks x tracks weight matrix in
closed form, B = I - P / diag(P) (column-wise) with P = (X^T X + lambda I)^-1 and a zero
diagonal; a user's scores are their row of X times B. X and B are float32; the Gram matrix is
built in column blocks and inverted in place (Cholesky), so a fit holds one dense tracks x
tracks matrix: 4 n^2 bytes, hence `max_tracks`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from ml.families.base import (
    CHUNK_CELLS,
    FamilySkipped,
    OverBudget,
    Recommender,
    chunked_top_k,
)
from ml.params import EaseParams


def weighted(counts: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """Listen counts -> the X EASE reads: 1 per (user, track) heard, or log(1 + count)."""
    out = counts.tocsr().astype(np.float32, copy=True)
    if weighting == "binary":
        out.data[:] = 1.0
    else:
        np.log1p(out.data, out=out.data)
    return out


def gram(x: sp.csr_matrix) -> np.ndarray:
    """X^T X as a dense float32 array, one block of columns at a time."""
    n = x.shape[1]
    out = np.empty((n, n), dtype=np.float32)
    by_track, by_column = x.T.tocsr(), x.tocsc()
    step = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, n, step):
        out[:, start : start + step] = (by_track @ by_column[:, start : start + step]).toarray()
    return out


def symmetric_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite float32 matrix, in place of `a` (LAPACK's
    Cholesky potrf + potri on the transposed, Fortran-ordered view; the lower triangle they
    leave is then mirrored into the upper one, a block of rows at a time)."""
    view = a.T  # Fortran-ordered, equal to `a`: LAPACK works on it without copying
    factor, info = lapack.spotrf(view, lower=0, clean=0, overwrite_a=1)
    if info == 0:
        factor, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"X^T X + lambda I is not positive definite (LAPACK info {info})")
    if not np.shares_memory(factor, a):  # LAPACK copied after all: take its result
        a[...] = factor.T
    n = a.shape[0]
    step = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, n, step):
        end = min(start + step, n)
        a[start:end, end:] = a[end:, start:end].T
        block = a[start:end, start:end]
        upper = np.triu_indices(end - start, 1)
        block[upper] = block.T[upper]
    return a


@dataclass
class EaseModel(Recommender):
    params: EaseParams
    weights: np.ndarray  # B, tracks x tracks float32, zero diagonal
    fit_seconds: float
    warm_start: bool = False

    @property
    def n_tracks(self) -> int:
        return self.weights.shape[0]

    def _scores(self, counts: sp.csr_matrix) -> np.ndarray:
        return np.asarray(weighted(counts, self.params.weighting) @ self.weights)

    def recommend(
        self, rows: np.ndarray, heard: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """X[rows] B, chunked over users, without the tracks heard."""
        return chunked_top_k(lambda _, part: self._scores(part), rows, heard, k)

    def similar(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row i of B: what EASE recommends to someone who heard track i alone."""
        n = self.weights.shape[0]
        itself = sp.identity(n, dtype=np.float32, format="csr")
        k = max(min(k, n - 1), 0)
        return chunked_top_k(lambda chunk, _: self.weights[chunk], np.arange(n), itself, k)

    def fold_in(self, counts_row: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The row times B (exact: what recommend gives a user with these counts)."""
        ids, scores = self.recommend(np.zeros(1, dtype=np.int64), counts_row.tocsr(), k)
        return ids[0], scores[0]

    def save_model(self, path: Path) -> None:
        np.savez(path, weights=self.weights)


def expected_seconds(n: int, probe: int = 2048) -> float:
    """The inversion's time at n tracks, from timing one of `probe` tracks here and now, scaled
    by the cube (the Gram matrix and the rest of the fit cost less)."""
    m = min(n, probe)
    a = np.eye(m, dtype=np.float32) * np.float32(m) + np.float32(1.0)
    started = time.perf_counter()
    symmetric_inverse(a)
    return (time.perf_counter() - started) * (n / m) ** 3


def fit_ease(
    counts: sp.csr_matrix, params: EaseParams, num_threads: int = 0, deadline: float | None = None
) -> EaseModel:
    """B from the counts; FamilySkipped above params.max_tracks tracks, OverBudget when its
    expected time would end after `deadline` (time.monotonic()): one inversion cannot be
    stopped half way, so it is not started."""
    n = counts.shape[1]
    if n > params.max_tracks:
        gigabytes = 4 * n * n / 1e9
        raise FamilySkipped(
            f"ease skipped: {n} tracks > max_tracks {params.max_tracks} "
            f"(its dense tracks x tracks matrix would take {gigabytes:.1f} GB)"
        )
    with threadpool_limits(limits=num_threads or None, user_api="blas"):
        if deadline is not None:
            expected = expected_seconds(n)
            if time.monotonic() + expected > deadline:
                message = f"not started: its inversion would take ~{expected:.0f}s"
                raise OverBudget(message, expected)
        started = time.perf_counter()
        p = gram(weighted(counts, params.weighting))
        p[np.diag_indices(n)] += np.float32(params.regularization)
        symmetric_inverse(p)
        p /= -np.diag(p).copy()[None, :]
        np.fill_diagonal(p, 0.0)
    return EaseModel(params, p, time.perf_counter() - started)


def load_ease(path: Path, params: EaseParams) -> EaseModel:
    with np.load(path, allow_pickle=False) as saved:
        return EaseModel(params, saved["weights"], fit_seconds=0.0)

"""Fold-in: a list recomputed now from a user's listens and the recent ones the app sends, by
whichever model family the champion's artifact holds (ml.families: ALS solves the user's
factors from them, item kNN and EASE score them exactly, BPR and LMF approximate the user by
the tracks heard). Every track listened to, before or just now, is left out of the list. BLAS
runs single-threaded (serving.app limits it once per process)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from ml.families import FactorModel, Recommender
from ml.registry import load_model


@dataclass(frozen=True)
class ServedModel:
    """One champion's artifact, loaded whole; requests hold one reference to it throughout."""

    model_run_id: str
    recommender: Recommender
    track_ids: np.ndarray  # column -> track_id, sorted or not
    order: np.ndarray  # argsort of track_ids, for id -> column lookups

    @classmethod
    def load(cls, path: Path) -> ServedModel:
        """The artifact at `path` (ml.registry's layout); raises if any part is missing or off."""
        loaded = load_model(path)
        recommender = loaded.model
        track_ids = np.asarray(loaded.track_ids, dtype=np.int64)
        if len(track_ids) != recommender.n_tracks:
            raise ValueError("the model's tracks and the track ids disagree")
        if isinstance(recommender, FactorModel):
            recommender.model.num_threads = 1  # one request, one core: the workers share it
            if isinstance(recommender.model, AlternatingLeastSquares):
                recommender.model.YtY  # noqa: B018  (implicit keeps it: not in the first request)
        return cls(path.name, recommender, track_ids, np.argsort(track_ids, kind="stable"))

    def columns(self, track_ids: Iterable[int]) -> dict[int, int]:
        """track_id -> model column, for the ids the model knows."""
        wanted = np.fromiter(track_ids, dtype=np.int64)
        if wanted.size == 0 or self.track_ids.size == 0:
            return {}
        sorted_ids = self.track_ids[self.order]
        at = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(sorted_ids) - 1)
        known = sorted_ids[at] == wanted
        return dict(zip(wanted[known].tolist(), self.order[at[known]].tolist(), strict=True))

    def fold_in(
        self, history: Mapping[int, int], recent: Iterable[int], k: int
    ) -> list[tuple[int, float]] | None:
        """(track_id, score) best first, none of `history` (track_id -> listens) or `recent`;
        None when the model knows none of those tracks (nothing to fold in)."""
        counts = Counter(history)
        counts.update(recent)
        columns = self.columns(counts)
        if not columns:
            return None
        cols = np.fromiter(columns.values(), dtype=np.int32)
        values = np.array([counts[track] for track in columns], dtype=np.float32)
        row = sp.csr_matrix(
            (values, (np.zeros(len(cols), dtype=np.int32), cols)),
            shape=(1, len(self.track_ids)),
        )
        row.sort_indices()
        ids, scores = self.recommender.fold_in(row, k)
        keep = ids >= 0
        return list(zip(self.track_ids[ids[keep]].tolist(), scores[keep].tolist(), strict=True))

"""Recommender families behind one interface: `fit(counts, params)` -> a `Recommender` (top-k
per user, similar tracks, fold-in, save), `load(directory)` back, and each family's params
(`parse_params` reads any row of ml.model_runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from ml.families.base import MODEL_FILE, PARAMS_FILE, FamilySkipped, OverBudget, Recommender
from ml.families.ease import EaseModel, fit_ease, load_ease
from ml.families.factors import FactorModel, fit_factors, load_factors
from ml.families.knn import ItemKnnModel, fit_item_knn, load_item_knn
from ml.params import (
    FAMILIES,
    LASTFM_ALS,
    AlsParams,
    BprParams,
    EaseParams,
    ItemKnnParams,
    LmfParams,
    Params,
    default_search_space,
    parse_params,
)

__all__ = [
    "FAMILIES",
    "LASTFM_ALS",
    "AlsParams",
    "BprParams",
    "EaseModel",
    "EaseParams",
    "FactorModel",
    "FamilySkipped",
    "ItemKnnModel",
    "ItemKnnParams",
    "LmfParams",
    "OverBudget",
    "Params",
    "Recommender",
    "default_search_space",
    "fit",
    "load",
    "parse_params",
]


def fit(
    counts: sp.csr_matrix,
    params: Params,
    num_threads: int = 0,
    start: Recommender | None = None,
    deadline: float | None = None,
) -> Recommender:
    """A model of `params` on the users x tracks listen counts. ALS continues from `start` (an
    ALS fit of the same params and shapes, left unchanged); the other families fit from
    scratch. Raises FamilySkipped when the family cannot fit these data, and OverBudget (one)
    when it would go on past `deadline` (time.monotonic()): the factor families stop after an
    iteration, EASE does not start; item kNN's one pass is not timed."""
    if isinstance(params, AlsParams | BprParams | LmfParams):
        start = start if isinstance(start, FactorModel) else None
        return fit_factors(counts, params, num_threads, start, deadline)
    if isinstance(params, ItemKnnParams):
        return fit_item_knn(counts, params, num_threads)
    if isinstance(params, EaseParams):
        return fit_ease(counts, params, num_threads, deadline)
    raise TypeError(f"not a family's params: {params!r}")


def saved_params(directory: Path) -> dict[str, Any]:
    """The params JSON of an artifact: PARAMS_FILE, or the `params` of ml.registry's meta.json
    (artifacts saved before there were families)."""
    path = directory / PARAMS_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    return meta["params"]


def load(directory: Path) -> Recommender:
    """The model `Recommender.save` (or ml.registry) wrote to `directory`; nothing unpickled."""
    params = parse_params(saved_params(directory))
    path = directory / MODEL_FILE
    if isinstance(params, ItemKnnParams):
        return load_item_knn(path, params)
    if isinstance(params, EaseParams):
        return load_ease(path, params)
    return load_factors(path, params)

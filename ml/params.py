"""Each recommender family's hyper-parameters as a typed, frozen pydantic model with a `family`
discriminator (ml/config.toml's [model] and [search.<family>], ml.model_runs' params JSON), and
the small grid a time-budgeted search samples per family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Confidence = Literal["bm25", "log", "raw"]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, lt=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelParams(Section):
    """What an ALS candidate is: its hyper-parameters and how counts become confidences."""

    factors: Positive = 40
    regularization: NonNegative = 10.0
    iterations: Positive = 15
    alpha: Annotated[float, Field(gt=0)] = 15.0
    confidence: Confidence = "log"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42

    def to_json(self) -> dict[str, Any]:
        return {"model": "als", "use_gpu": False, **self.model_dump()}

    def label(self) -> str:
        weighting = self.confidence
        if weighting == "bm25":
            weighting = f"bm25(K1={self.bm25_k1:g},B={self.bm25_b:g})"
        return (
            f"f={self.factors} reg={self.regularization:g} it={self.iterations} "
            f"alpha={self.alpha:g} {weighting}"
        )


Family = Literal["als", "bpr", "lmf", "item_knn", "ease"]
FAMILIES: tuple[str, ...] = get_args(Family)
Rate = Annotated[float, Field(gt=0)]


class FamilyParams(Section):
    """The JSON of every family: `{"model": <family>, "family": <family>, ...fields}` (`model`
    is the key rows of ml.model_runs have always had)."""

    def to_json(self) -> dict[str, Any]:
        fields = self.model_dump()
        return {"model": fields["family"], **fields}


class AlsParams(ModelParams):
    """implicit's ALS on confidences from listen counts (ml.families.factors)."""

    family: Literal["als"] = "als"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "family": "als"}

    def label(self) -> str:
        return f"als {super().label()}"


class BprParams(FamilyParams):
    """implicit's Bayesian Personalized Ranking (SGD on sampled pairs, binary listens)."""

    family: Literal["bpr"] = "bpr"
    factors: Positive = 64
    learning_rate: Rate = 0.01
    regularization: NonNegative = 0.01
    iterations: Positive = 100
    random_state: int = 42

    def label(self) -> str:
        return (
            f"bpr f={self.factors} lr={self.learning_rate:g} reg={self.regularization:g} "
            f"it={self.iterations}"
        )


class LmfParams(FamilyParams):
    """implicit's Logistic Matrix Factorization (listen counts as weights, sampled negatives)."""

    family: Literal["lmf"] = "lmf"
    factors: Positive = 30
    learning_rate: Rate = 1.0
    regularization: NonNegative = 0.6
    iterations: Positive = 30
    neg_prop: Positive = 30
    random_state: int = 42

    def label(self) -> str:
        return (
            f"lmf f={self.factors} lr={self.learning_rate:g} reg={self.regularization:g} "
            f"it={self.iterations} neg={self.neg_prop}"
        )


class ItemKnnParams(FamilyParams):
    """implicit's item-item nearest neighbours: `neighbours` kept per track, similarity by
    `weighting` (bm25 with bm25_k1 / bm25_b, cosine, tfidf) of the users x tracks counts."""

    family: Literal["item_knn"] = "item_knn"
    weighting: Literal["bm25", "cosine", "tfidf"] = "bm25"
    neighbours: Positive = 100
    bm25_k1: NonNegative = 1.2
    bm25_b: Annotated[float, Field(ge=0, le=1)] = 0.0  # 0: no length normalisation, which
    # would push popular tracks down (they are what listeners play next: ml/README "Measured")

    def label(self) -> str:
        weighting = self.weighting
        if weighting == "bm25":
            weighting = f"bm25(K1={self.bm25_k1:g},B={self.bm25_b:g})"
        return f"item_knn K={self.neighbours} {weighting}"


class EaseParams(FamilyParams):
    """EASE (Steck 2019), closed form on the `weighting` of the counts (binary or log1p), L2
    `regularization` lambda; skipped above `max_tracks` (dense tracks x tracks matrices)."""

    family: Literal["ease"] = "ease"
    regularization: NonNegative = 500.0
    weighting: Literal["binary", "log"] = "binary"
    max_tracks: Positive = 20_000

    def label(self) -> str:
        return f"ease lambda={self.regularization:g} {self.weighting}"


Params = Annotated[
    AlsParams | BprParams | LmfParams | ItemKnnParams | EaseParams,
    Field(discriminator="family"),
]
PARAMS_BY_FAMILY: dict[str, type[Section]] = {
    "als": AlsParams,
    "bpr": BprParams,
    "lmf": LmfParams,
    "item_knn": ItemKnnParams,
    "ease": EaseParams,
}
_ADAPTER: TypeAdapter[Params] = TypeAdapter(Params)

# implicit's examples/lastfm.py for ALS: 128 factors on bm25_weight(K1=100, B=0.8), the rest
# implicit's defaults (regularization 0.01, 15 iterations, alpha 1). The floor a published model
# must reach on the same holdout.
LASTFM_ALS = AlsParams(
    factors=128,
    regularization=0.01,
    iterations=15,
    alpha=1.0,
    confidence="bm25",
    bm25_k1=100.0,
    bm25_b=0.8,
)


def parse_params(params: Mapping[str, Any]) -> Params:
    """A row's params JSON -> the family's params; no `family` key: the `model` key, and rows
    with neither are ALS. Keys the family does not have (e.g. `use_gpu`) are ignored."""
    family = params.get("family") or params.get("model") or "als"
    cls = PARAMS_BY_FAMILY.get(family)
    if cls is None:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    known = {k: v for k, v in params.items() if k in cls.model_fields}
    return _ADAPTER.validate_python({**known, "family": family})


SEARCH_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "als": {
        "factors": (16, 32, 64, 128),
        "regularization": (1.0, 10.0, 30.0, 100.0),
        "alpha": (1.0, 15.0, 40.0),
        "confidence": ("log", "bm25"),
    },
    "bpr": {
        "factors": (32, 64, 128),
        "learning_rate": (0.01, 0.05),
        "regularization": (0.001, 0.01),
        "iterations": (100, 200),
    },
    "lmf": {
        "factors": (16, 30, 64),
        "learning_rate": (0.5, 1.0),
        "regularization": (0.6, 1.5),
        "iterations": (30, 40),
    },
    "item_knn": {
        "weighting": ("bm25", "cosine", "tfidf"),
        "neighbours": (100, 400),
        "bm25_b": (0.0, 0.2, 0.75),
    },
    "ease": {
        "regularization": (500.0, 5000.0, 20000.0, 50000.0),
        "weighting": ("binary", "log"),
    },
}


def default_search_space(family: str) -> dict[str, tuple[Any, ...]]:
    """The values a challenger of `family` may take per knob (the others keep their defaults);
    every combination is a valid params of the family."""
    if family not in SEARCH_SPACES:
        raise ValueError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    return dict(SEARCH_SPACES[family])

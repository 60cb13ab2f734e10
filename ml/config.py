"""The recommender's settings: `ml/config.toml` as a typed pydantic model, with `section.key=value`
overrides per run; a mistake is one `ConfigError` line before the warehouse is read."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.toml"
Confidence = Literal["bm25", "log", "raw"]
Metric = Literal["precision", "recall", "map", "ndcg"]
SimilarScoring = Literal["dot", "cosine"]  # how similar_tracks ranks neighbours (ml.model.similar)
SIMILAR_SCORINGS: tuple[str, ...] = get_args(SimilarScoring)
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
T = TypeVar("T")
# a search space: a TOML list (or one value) of at least one value
Values = Annotated[
    tuple[T, ...],
    BeforeValidator(lambda v: tuple(v) if isinstance(v, list | tuple) else (v,)),
    Field(min_length=1),
]


class ConfigError(ValueError):
    """The config file or an override is wrong; the message is one line."""


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

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> ModelParams:
        return cls.model_validate({k: v for k, v in params.items() if k in cls.model_fields})

    def label(self) -> str:
        weighting = self.confidence
        if weighting == "bm25":
            weighting = f"bm25(K1={self.bm25_k1:g},B={self.bm25_b:g})"
        return (
            f"f={self.factors} reg={self.regularization:g} it={self.iterations} "
            f"alpha={self.alpha:g} {weighting}"
        )


class Runtime(Section):
    num_threads: int = 0


class Evaluation(Section):
    k: Positive = 10
    holdout_per_user: Positive = 2
    min_user_tracks: int = 5
    max_eval_users: int = 20000
    min_eval_users: Positive = 20
    seed: int = 7

    @model_validator(mode="after")
    def _consistent(self) -> Evaluation:
        if self.min_user_tracks <= self.holdout_per_user:
            raise ValueError("evaluation.holdout_per_user must be below min_user_tracks")
        if self.max_eval_users < self.min_eval_users:
            raise ValueError("evaluation.min_eval_users must be <= max_eval_users")
        return self


class Selection(Section):
    metric: Metric = "ndcg"
    min_improvement: NonNegative = 0.02
    time_budget_s: NonNegative = 600.0
    max_challengers: Annotated[int, Field(ge=0)] = 6


class Search(Section):
    factors: Values[Positive] = (16, 32, 64, 128)
    regularization: Values[NonNegative] = (1.0, 10.0, 50.0)
    iterations: Values[Positive] = (10, 15, 25)
    alpha: Values[float] = (1.0, 10.0, 40.0)
    confidence: Values[Confidence] = ("log", "bm25")
    seed: int = 11

    def space(self) -> dict[str, tuple[Any, ...]]:
        return self.model_dump(exclude={"seed"})


class Publish(Section):
    k: Positive = 10
    similar_k: Positive = 10
    similar_scoring: SimilarScoring = "dot"
    lock_timeout_s: NonNegative = 30.0


class Artifacts(Section):
    root: str = "artifacts/models"
    keep: Annotated[int, Field(ge=1)] = 5  # the serving model is always kept besides

    def root_path(self, project_root: Path) -> Path:
        path = Path(self.root).expanduser()
        return path if path.is_absolute() else project_root / path


class Spark(Section):
    """Above `mllib_above_pairs` (user, track) pairs the Spark engine trains with MLlib."""

    mllib_above_pairs: Annotated[int, Field(ge=0)] = 25_000_000
    als_blocks: Annotated[int, Field(ge=0)] = 0  # 0 = MLlib's default


class MlConfig(Section):
    model: ModelParams = ModelParams()
    runtime: Runtime = Runtime()
    evaluation: Evaluation = Evaluation()
    selection: Selection = Selection()
    search: Search = Search()
    publish: Publish = Publish()
    artifacts: Artifacts = Artifacts()
    spark: Spark = Spark()


def _message(exc: ValidationError) -> str:
    """pydantic's first error as one line that names the key."""
    error = exc.errors()[0]
    if error["type"] == "value_error":  # our own checks (model_validator) say it all
        return str(error["ctx"]["error"])
    where = ".".join(str(part) for part in error["loc"] if isinstance(part, str))
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return f"unknown section [{where}] (known: {', '.join(MlConfig.model_fields)})"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where}"
    return f"{where}: {error['msg']} (got {error['input']!r})"


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); the value is read as TOML, else a string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"override {text!r} is not section.key=value (e.g. model.factors=128)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key.strip(), value


def load_config(
    path: Path | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Mapping[str, Any]] | None = None,
) -> MlConfig:
    """The config of `path` (default ml/config.toml), then `values`, then `overrides`."""
    source = path or DEFAULT_CONFIG_PATH
    try:
        merged: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
    updates = [(s, k, v) for s, keys in (values or {}).items() for k, v in keys.items()]
    updates += [parse_override(text) for text in overrides]
    for section, key, value in updates:
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section} is a section, not a key")
        table[key] = value
    try:
        return MlConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_message(exc)) from None

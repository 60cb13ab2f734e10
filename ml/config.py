"""The recommender's settings: `ml/config.toml` as a typed pydantic model, with `section.key=value`
overrides per run; a mistake is one `ConfigError` line before the warehouse is read."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from ml.params import (
    FAMILIES,
    PARAMS_BY_FAMILY,
    AlsParams,
    Family,
    NonNegative,
    Params,
    Positive,
    Section,
    Share,
    default_search_space,
    parse_params,
)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.toml"
Metric = Literal["precision", "recall", "map", "ndcg"]
SimilarScoring = Literal["dot", "cosine"]  # how MLlib's similar_tracks ranks (ml.mllib.lists)
T = TypeVar("T")
# a search space: a TOML list (or one value) of at least one value
Values = Annotated[
    tuple[T, ...],
    BeforeValidator(lambda v: tuple(v) if isinstance(v, list | tuple) else (v,)),
    Field(min_length=1),
]


class ConfigError(ValueError):
    """The config file or an override is wrong; the message is one line."""


def _als_by_default(value: Any) -> Any:
    """[model] without a `family` key is ALS (configs written before there were families)."""
    return {"family": "als", **value} if isinstance(value, Mapping) else value


class Runtime(Section):
    num_threads: int = 0


class Evaluation(Section):
    """How candidates are judged (ml.split, ml.intervals): the windows of a time split, the
    per-user holdout it falls back to, and the bootstrap of the intervals."""

    k: Positive = 10
    holdout_per_user: Positive = 2  # per window, for users with >= min_user_tracks tracks
    min_user_tracks: int = 5
    max_eval_users: int = 20000  # per window
    # candidates are fit and compared on the judged users and a seeded sample of the others,
    # at most this many users in all (0: every user); the winner is refit on everyone
    max_fit_users: Annotated[int, Field(ge=0)] = 30_000
    min_eval_users: Positive = 20  # per window, time split and holdout alike
    seed: int = 7
    valid_share: Share = 0.1  # the latest pairs: validation window, then test window
    test_share: Share = 0.1
    valid_days: NonNegative = 0.0  # > 0 (both): the windows are the last days (UTC) instead
    test_days: NonNegative = 0.0
    min_span_days: NonNegative = 3.0  # first-listen times must span this long for a time split
    resamples: Positive = 1000  # bootstrap resamples of the intervals (ml.intervals)
    confidence: Share = 0.95
    # ml.rerank: the favorite-genre re-rank depths validation picks from for each model
    # (besides none); a depth at or below k re-ranks nothing
    favorite_genre_depths: Annotated[tuple[Positive, ...], BeforeValidator(tuple)] = (25, 50, 100)

    @model_validator(mode="after")
    def _consistent(self) -> Evaluation:
        if self.min_user_tracks <= 2 * self.holdout_per_user:
            raise ValueError("evaluation.min_user_tracks must exceed 2 x holdout_per_user")
        if self.max_eval_users < self.min_eval_users:
            raise ValueError("evaluation.min_eval_users must be <= max_eval_users")
        if self.valid_share + self.test_share >= 1:
            raise ValueError("evaluation.valid_share + test_share must be below 1")
        if (self.valid_days > 0) != (self.test_days > 0):
            raise ValueError("evaluation.valid_days and test_days are set together")
        return self

    def bootstrap(self) -> dict[str, Any]:
        """The keyword arguments of ml.intervals."""
        return {"resamples": self.resamples, "level": self.confidence, "seed": self.seed}


class Selection(Section):
    metric: Metric = "ndcg"
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.0  # guardrails: a warning alert when
    max_churn: Annotated[float, Field(ge=0, le=1)] = 1.0  # the served lists cross them
    time_budget_s: NonNegative = 600.0
    max_challengers: Annotated[int, Field(ge=0)] = 6


class Train(Section):
    """The train step as a whole: past `time_budget_s` seconds (0: no limit) it gives up its
    optional phases, in ml.budget's order (ml/README.md "Time budget")."""

    time_budget_s: NonNegative = 0.0


class Search(Section):
    """The challengers: which families, and the values each knob may take per family
    (`[search.<family>]`; a family's knobs not listed keep its defaults)."""

    families: Values[Family] = FAMILIES
    seed: int = 11
    als: dict[str, Values[Any]] = Field(default_factory=lambda: default_search_space("als"))
    bpr: dict[str, Values[Any]] = Field(default_factory=lambda: default_search_space("bpr"))
    lmf: dict[str, Values[Any]] = Field(default_factory=lambda: default_search_space("lmf"))
    item_knn: dict[str, Values[Any]] = Field(
        default_factory=lambda: default_search_space("item_knn")
    )
    ease: dict[str, Values[Any]] = Field(default_factory=lambda: default_search_space("ease"))

    @model_validator(mode="after")
    def _valid_values(self) -> Search:
        for family in FAMILIES:  # every listed value must make valid params
            for name, values in self.space(family).items():
                for value in values:
                    self.params(family, {name: value})
        return self

    def space(self, family: str) -> dict[str, tuple[Any, ...]]:
        return dict(getattr(self, family))

    def params(self, family: str, values: Mapping[str, Any]) -> Params:
        """The family's params with `values` for some knobs, the family's defaults for the rest."""
        unknown = set(values) - set(PARAMS_BY_FAMILY[family].model_fields)
        if unknown:
            raise ValueError(f"search.{family}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            return parse_params({"family": family, **values})
        except ValidationError as exc:
            raise ValueError(f"search.{family}: {_message(exc)}") from None


class Publish(Section):
    k: Positive = 10
    similar_k: Positive = 10
    similar_scoring: SimilarScoring = "dot"  # the Spark engine's MLlib lists (ml/mllib)
    lock_timeout_s: NonNegative = 30.0
    blend_until: Annotated[int, Field(ge=0)] = 5  # tracks heard from which the model alone serves
    new_track_slots: Annotated[int, Field(ge=0, le=3)] = 1  # slots for unheard tracks per user


class PlayNext(Section):
    """The "play next" candidates (ml.play_next): what counts as a session, and the grid."""

    windows: Values[Positive] = (3,)  # co-occurrence: at most this many positions apart ...
    max_gap_seconds: Positive = 6 * 3600  # ... and at most this far apart in listen time
    co_occurrence_weight: NonNegative = 0.25
    dampings: Values[NonNegative] = (0.0, 0.5)
    collaborative_weights: Values[NonNegative] = (0.0, 0.25, 0.5)
    max_eval_users: Positive = 100_000
    max_fit_users: Annotated[int, Field(ge=0)] = 30_000  # candidates' histories (0: all)


class Artifacts(Section):
    root: str = "artifacts/models"
    keep: Annotated[int, Field(ge=1)] = 5  # the serving model is always kept besides

    def root_path(self, data_dir: Path) -> Path:
        """`root`, a relative one under the warehouse's data dir (MOOVITAMIX_DATA_DIR): the
        models belong to the warehouse they were trained on, and each warehouse's retention
        prunes only its own."""
        path = Path(self.root).expanduser()
        return path if path.is_absolute() else data_dir / path


class Spark(Section):
    """Above `mllib_above_pairs` (user, track) pairs the Spark engine trains with MLlib."""

    mllib_above_pairs: Annotated[int, Field(ge=0)] = 25_000_000
    als_blocks: Annotated[int, Field(ge=0)] = 0  # 0 = MLlib's default


class MlConfig(Section):
    model: Annotated[Params, BeforeValidator(_als_by_default)] = AlsParams()
    runtime: Runtime = Runtime()
    evaluation: Evaluation = Evaluation()
    selection: Selection = Selection()
    train: Train = Train()
    search: Search = Search()
    publish: Publish = Publish()
    play_next: PlayNext = PlayNext()
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
    family = merged.get("model", {}).get("family", "als")
    for section, key, value in updates:
        if (section, key) == ("model", "family") and value != family:
            merged["model"] = {}  # another family: the file's [model] keys are the old one's
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section} is a section, not a key")
        table[key] = value
    try:
        return MlConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_message(exc)) from None

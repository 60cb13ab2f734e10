"""The recommender's settings: `ml/config.toml`, with `section.key=value` overrides per run.

Every key of the file is typed and checked here, so a typo in the file or on the command line is
one clear error before anything is read from the warehouse.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.toml"
CONFIDENCE_SCHEMES = ("bm25", "log", "raw")
METRICS = ("precision", "recall", "map", "ndcg")
SIMILAR_SCORINGS = ("dot", "cosine")  # how similar_tracks ranks neighbours (ml.model.similar)


class ConfigError(ValueError):
    """The config file or an override is wrong; the message is one line."""


@dataclass(frozen=True)
class ModelParams:
    """What an ALS candidate is: its hyper-parameters and how counts become confidences."""

    factors: int = 40
    regularization: float = 10.0
    iterations: int = 15
    alpha: float = 15.0
    confidence: str = "log"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42

    def to_json(self) -> dict[str, Any]:
        return {"model": "als", "use_gpu": False, **asdict(self)}

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> ModelParams:
        known = {f.name for f in fields(cls)}
        return _checked_model(cls(**{k: v for k, v in params.items() if k in known}))

    def label(self) -> str:
        weighting = (
            f"bm25(K1={self.bm25_k1:g},B={self.bm25_b:g})"
            if self.confidence == "bm25"
            else self.confidence
        )
        return (
            f"f={self.factors} reg={self.regularization:g} it={self.iterations} "
            f"alpha={self.alpha:g} {weighting}"
        )


@dataclass(frozen=True)
class Runtime:
    num_threads: int = 0


@dataclass(frozen=True)
class Evaluation:
    k: int = 10
    holdout_per_user: int = 2
    min_user_tracks: int = 5
    max_eval_users: int = 20000
    min_eval_users: int = 20
    seed: int = 7


@dataclass(frozen=True)
class Selection:
    metric: str = "ndcg"
    min_improvement: float = 0.02
    time_budget_s: float = 600.0
    max_challengers: int = 6


@dataclass(frozen=True)
class Search:
    factors: tuple[int, ...] = (16, 32, 64, 128)
    regularization: tuple[float, ...] = (1.0, 10.0, 50.0)
    iterations: tuple[int, ...] = (10, 15, 25)
    alpha: tuple[float, ...] = (1.0, 10.0, 40.0)
    confidence: tuple[str, ...] = ("log", "bm25")
    seed: int = 11

    def space(self) -> dict[str, tuple[Any, ...]]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seed"}


@dataclass(frozen=True)
class Publish:
    k: int = 10
    similar_k: int = 10
    similar_scoring: str = "dot"
    lock_timeout_s: float = 30.0


@dataclass(frozen=True)
class Artifacts:
    root: str = "artifacts/models"
    keep: int = 5

    def root_path(self, project_root: Path) -> Path:
        path = Path(self.root).expanduser()
        return path if path.is_absolute() else project_root / path


@dataclass(frozen=True)
class Spark:
    """The Spark engine's recommender: above `mllib_above_pairs` (user, track) pairs training
    runs in Spark with MLlib's ALS (ml.mllib) instead of implicit in the driver."""

    mllib_above_pairs: int = 25_000_000
    als_blocks: int = 0  # MLlib ALS user and item blocks; 0 = MLlib's default (10)


@dataclass(frozen=True)
class MlConfig:
    model: ModelParams = ModelParams()
    runtime: Runtime = Runtime()
    evaluation: Evaluation = Evaluation()
    selection: Selection = Selection()
    search: Search = Search()
    publish: Publish = Publish()
    artifacts: Artifacts = Artifacts()
    spark: Spark = Spark()


_SECTION_TYPES = {
    "model": ModelParams,
    "runtime": Runtime,
    "evaluation": Evaluation,
    "selection": Selection,
    "search": Search,
    "publish": Publish,
    "artifacts": Artifacts,
    "spark": Spark,
}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"{section}.{key}"
    if isinstance(default, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise ConfigError(f"{where} must list at least one value")
        kind = type(default[0]) if default else str
        return tuple(_coerce(section, key, item, kind()) for item in items)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _section(name: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTION_TYPES[name]
    default = cls()
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {name}.{unknown[0]} (known: {', '.join(sorted(known))})")
    coerced = {k: _coerce(name, k, v, getattr(default, k)) for k, v in values.items()}
    return replace(default, **coerced)


def _checked_model(params: ModelParams) -> ModelParams:
    if params.factors < 1 or params.iterations < 1:
        raise ConfigError("model.factors and model.iterations must be >= 1")
    if params.regularization < 0 or params.alpha <= 0:
        raise ConfigError("model.regularization must be >= 0 and model.alpha > 0")
    if params.confidence not in CONFIDENCE_SCHEMES:
        raise ConfigError(
            f"model.confidence must be one of {', '.join(CONFIDENCE_SCHEMES)}, "
            f"not {params.confidence!r}"
        )
    return params


def _checked(config: MlConfig) -> MlConfig:
    _checked_model(config.model)
    ev, sel, pub = config.evaluation, config.selection, config.publish
    if ev.k < 1 or pub.k < 1 or pub.similar_k < 1:
        raise ConfigError("evaluation.k, publish.k and publish.similar_k must be >= 1")
    if ev.holdout_per_user < 1 or ev.min_user_tracks <= ev.holdout_per_user:
        raise ConfigError(
            "evaluation.holdout_per_user must be >= 1 and below evaluation.min_user_tracks"
        )
    if ev.max_eval_users < ev.min_eval_users or ev.min_eval_users < 1:
        raise ConfigError("evaluation.min_eval_users must be >= 1 and <= max_eval_users")
    if sel.metric not in METRICS:
        raise ConfigError(f"selection.metric must be one of {', '.join(METRICS)}")
    if sel.min_improvement < 0 or sel.time_budget_s < 0 or sel.max_challengers < 0:
        raise ConfigError("selection.min_improvement, time_budget_s, max_challengers must be >= 0")
    if pub.similar_scoring not in SIMILAR_SCORINGS:
        raise ConfigError(
            f"publish.similar_scoring must be one of {', '.join(SIMILAR_SCORINGS)}, "
            f"not {pub.similar_scoring!r}"
        )
    bad = [c for c in config.search.confidence if c not in CONFIDENCE_SCHEMES]
    if bad:
        raise ConfigError(f"search.confidence has an unknown scheme {bad[0]!r}")
    if config.artifacts.keep < 1:
        raise ConfigError("artifacts.keep must be >= 1 (the serving model is always kept)")
    if config.spark.mllib_above_pairs < 0 or config.spark.als_blocks < 0:
        raise ConfigError("spark.mllib_above_pairs and spark.als_blocks must be >= 0")
    return config


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
        raw: dict[str, dict[str, Any]] = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
    merged: dict[str, dict[str, Any]] = {name: dict(raw.get(name, {})) for name in _SECTION_TYPES}
    unknown = sorted(set(raw) - set(_SECTION_TYPES))
    if unknown:
        raise ConfigError(f"config file {source}: unknown section [{unknown[0]}]")
    for name, section_values in (values or {}).items():
        if name not in _SECTION_TYPES:
            raise ConfigError(f"unknown config section {name!r}")
        merged[name].update(section_values)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in _SECTION_TYPES:
            raise ConfigError(
                f"override {text!r}: unknown section {section!r} "
                f"(known: {', '.join(_SECTION_TYPES)})"
            )
        merged[section][key] = value
    config = MlConfig(**{name: _section(name, merged[name]) for name in _SECTION_TYPES})
    return _checked(config)

from pathlib import Path

import pytest

from ml.config import ConfigError, ModelParams, load_config, parse_override


def test_the_shipped_config_loads_and_overrides_are_typed() -> None:
    config = load_config(overrides=["model.factors=128", "search.factors=[8, 16]"])
    assert config.model.factors == 128
    assert config.search.factors == (8, 16)
    assert config.evaluation.k == 10
    assert load_config(overrides=["model.regularization=2"]).model.regularization == 2.0


def test_override_values_are_toml_or_else_strings() -> None:
    assert parse_override("artifacts.root=/tmp/x y") == ("artifacts", "root", "/tmp/x y")
    assert parse_override("model.confidence='log'") == ("model", "confidence", "log")
    assert parse_override("selection.min_improvement = 0.1") == (
        "selection",
        "min_improvement",
        0.1,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.factor=3", "unknown key model.factor"),
        ("modle.factors=3", "unknown section"),
        ("model.factors=many", r"model.factors: Input should be a valid integer \(got 'many'\)"),
        ("model.confidence=tfidf", "model.confidence: Input should be 'bm25', 'log' or 'raw'"),
        ("selection.metric=auc", "selection.metric"),
        ("publish.similar_scoring=jaccard", "publish.similar_scoring: Input should be 'dot'"),
        ("model.factors=0", "model.factors: Input should be greater than or equal to 1"),
        ("evaluation.holdout_per_user=9", "holdout_per_user"),
        ("factors", "section.key=value"),
    ],
)
def test_bad_keys_and_values_are_one_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    extra = tmp_path / "extra.toml"
    extra.write_text("[modle]\nfactors = 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(extra)


def test_model_params_round_trip_through_json() -> None:
    params = ModelParams(factors=8, confidence="log")
    as_json = params.to_json()
    assert as_json["model"] == "als" and as_json["use_gpu"] is False
    assert ModelParams.from_json(as_json) == params

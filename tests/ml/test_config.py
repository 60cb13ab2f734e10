from pathlib import Path

import pytest

from ml.config import ConfigError, load_config, parse_override
from ml.params import (
    FAMILIES,
    LASTFM_ALS,
    AlsParams,
    BprParams,
    EaseParams,
    ItemKnnParams,
    parse_params,
)


def test_the_shipped_config_loads_and_overrides_are_typed() -> None:
    config = load_config(overrides=["model.factors=64", "search.als={factors=[8, 16]}"])
    assert isinstance(config.model, AlsParams) and config.model.factors == 64
    assert config.search.space("als") == {"factors": (8, 16)}
    assert config.search.families == FAMILIES
    assert config.evaluation.k == 10
    assert load_config(overrides=["model.regularization=2"]).model.regularization == 2.0


def test_override_values_are_toml_or_else_strings() -> None:
    assert parse_override("artifacts.root=/tmp/x y") == ("artifacts", "root", "/tmp/x y")
    assert parse_override("model.confidence='log'") == ("model", "confidence", "log")
    assert parse_override("play_next.windows = [2, 5]") == ("play_next", "windows", [2, 5])


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_model_is_any_family_and_without_a_family_key_als(tmp_path: Path) -> None:
    legacy = load_config(_config_file(tmp_path, "[model]\nfactors = 8\nconfidence = 'log'\n"))
    assert legacy.model == AlsParams(factors=8, confidence="log")
    knn = load_config(_config_file(tmp_path, "[model]\nfamily = 'item_knn'\nneighbours = 50\n"))
    assert knn.model == ItemKnnParams(neighbours=50)
    ease = load_config(
        _config_file(tmp_path, "[model]\nfamily = 'ease'\n"), ["model.weighting='log'"]
    )
    assert ease.model == EaseParams(weighting="log")
    with pytest.raises(ConfigError, match=r"^model\.bpr\.learning_rate: Input should be greater"):
        load_config(_config_file(tmp_path, "[model]\nfamily = 'bpr'\nlearning_rate = 0\n"))
    with pytest.raises(ConfigError, match=r"^unknown key model\.item_knn\.factors$"):
        load_config(_config_file(tmp_path, "[model]\nfamily = 'item_knn'\nfactors = 8\n"))


def test_params_json_round_trips_for_every_family_and_old_rows_are_als() -> None:
    for params in (
        AlsParams(factors=8),
        BprParams(factors=8),
        ItemKnnParams(weighting="cosine"),
        EaseParams(regularization=50.0),
        LASTFM_ALS,
    ):
        as_json = params.to_json()
        assert as_json["model"] == as_json["family"] == params.family
        assert parse_params(as_json) == params
    old_row = {"model": "als", "use_gpu": False, "factors": 8, "confidence": "log"}
    assert parse_params(old_row) == AlsParams(factors=8, confidence="log")
    assert parse_params({"factors": 8}) == AlsParams(factors=8)


def test_search_grids_per_family(tmp_path: Path) -> None:
    text = (
        "[search]\nfamilies = ['bpr', 'ease']\n"
        "[search.bpr]\nfactors = [8, 16]\nlearning_rate = 0.1\n"
    )
    search = load_config(_config_file(tmp_path, text)).search
    assert search.families == ("bpr", "ease")
    assert search.space("bpr") == {"factors": (8, 16), "learning_rate": (0.1,)}  # one value
    assert search.params("bpr", {"factors": 16}) == BprParams(factors=16)
    assert search.space("ease") == load_config().search.space("ease")  # not listed: defaults


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.factor=3", "unknown key model.als.factor"),
        ("modle.factors=3", "unknown section"),
        (
            "model.factors=many",
            r"model.als.factors: Input should be a valid integer \(got 'many'\)",
        ),
        ("model.confidence=tfidf", "model.als.confidence: Input should be 'bm25', 'log' or 'raw'"),
        ("model.factors=0", "model.als.factors: Input should be greater than or equal to 1"),
        ("model.family=svd", "model: Input tag 'svd' found using 'family' does not match"),
        ("search.families=['als', 'svd']", "search.families: Input should be 'als', 'bpr'"),
        ("search.ease={lambda=[1.0]}", "search.ease: unknown key.s. lambda"),
        ("search.bpr={learning_rate=[0.1, -1.0]}", "search.bpr: .*learning_rate: Input should"),
        ("search.item_knn={weighting=['jaccard']}", "search.item_knn: .*'bm25', 'cosine'"),
        ("search.als={factors=[]}", "search.als.factors: .*at least 1 item"),
        ("selection.metric=auc", "selection.metric"),
        ("selection.min_improvement=0.1", "unknown key selection.min_improvement"),
        ("selection.max_challengers=-1", "selection.max_challengers: Input should be greater"),
        ("publish.similar_scoring=jaccard", "publish.similar_scoring: Input should be 'dot'"),
        ("publish.new_track_slots=4", "publish.new_track_slots: Input should be less than"),
        ("publish.blend_until=-1", "publish.blend_until: Input should be greater than"),
        ("evaluation.holdout_per_user=9", "holdout_per_user"),
        ("evaluation.valid_share=0.95", "evaluation.valid_share . test_share must be below 1"),
        ("evaluation.resamples=0", "evaluation.resamples: Input should be greater"),
        ("evaluation.confidence=1.0", "evaluation.confidence: Input should be less than 1"),
        ("evaluation.min_eval_users=30000", "min_eval_users must be <= max_eval_users"),
        ("play_next.windows=[]", "play_next.windows: .*at least 1 item"),
        ("play_next.dampings=[-1.0]", "play_next.dampings: Input should be greater"),
        ("factors", "section.key=value"),
    ],
)
def test_bad_keys_and_values_are_one_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(overrides=[override])
    assert "\n" not in str(raised.value)


def test_the_new_sections_keys_are_typed() -> None:
    config = load_config(
        overrides=[
            "evaluation.valid_days=1",
            "evaluation.test_days=1.5",
            "evaluation.resamples=50",
            "selection.max_churn=0.5",
            "publish.blend_until=0",
            "publish.new_track_slots=0",
            "play_next.windows=[2, 5]",
            "play_next.collaborative_weights=0.5",
        ]
    )
    assert (config.evaluation.valid_days, config.evaluation.test_days) == (1.0, 1.5)
    assert config.evaluation.bootstrap() == {"resamples": 50, "level": 0.95, "seed": 7}
    assert config.selection.max_churn == 0.5
    assert (config.publish.blend_until, config.publish.new_track_slots) == (0, 0)
    assert config.play_next.windows == (2, 5)
    assert config.play_next.collaborative_weights == (0.5,)
    with pytest.raises(ConfigError, match="valid_days and test_days are set together"):
        load_config(overrides=["evaluation.valid_days=2", "evaluation.test_days=0"])


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


def test_the_artifacts_of_two_warehouses_are_apart(tmp_path) -> None:
    """A relative artifacts root is under the data dir: two warehouses run from one checkout
    (MOOVITAMIX_DATA_DIR) keep, and prune, only their own models."""
    from moovitamix.settings import load_settings

    roots = {
        load_config().artifacts.root_path(
            load_settings({"MOOVITAMIX_DATA_DIR": str(tmp_path / name)}).data_dir
        )
        for name in ("one", "two")
    }
    assert roots == {
        tmp_path / "one" / "artifacts" / "models",
        tmp_path / "two" / "artifacts" / "models",
    }
    absolute = load_config(overrides=["artifacts.root=/srv/models"]).artifacts
    assert absolute.root_path(tmp_path / "one") == Path("/srv/models")

from pathlib import Path

from moovitamix.settings import load_settings


def test_env_file_is_a_fallback_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "MOOVITAMIX_API_URL=http://from-dotenv\nALERT_WEBHOOK_URL=http://hook\n"
    )
    settings = load_settings({"MOOVITAMIX_API_URL": "http://from-env"}, root=tmp_path)
    assert settings.api_url == "http://from-env"
    assert settings.alert_webhook_url == "http://hook"
    assert settings.warehouse_url is None and settings.uses_embedded_warehouse


def test_defaults_without_env_file(tmp_path: Path) -> None:
    settings = load_settings({}, root=tmp_path)
    assert settings.api_url is None
    assert settings.embedded_pgdata == tmp_path / ".data" / "postgres"


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    settings = load_settings(
        {"WAREHOUSE_URL": "  ", "MOOVITAMIX_DATA_DIR": str(tmp_path / "d")}, root=tmp_path
    )
    assert settings.warehouse_url is None
    assert settings.embedded_pgdata == tmp_path / "d" / "postgres"


def test_env_file_named_by_the_environment_or_none(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MOOVITAMIX_API_URL=http://from-dotenv\n")
    (tmp_path / "other.env").write_text("MOOVITAMIX_API_URL=http://from-other\n")
    named = load_settings({"MOOVITAMIX_ENV_FILE": "other.env"}, root=tmp_path)
    assert named.api_url == "http://from-other"
    for none in ("", " ", "/dev/null", "missing.env"):
        assert load_settings({"MOOVITAMIX_ENV_FILE": none}, root=tmp_path).api_url is None, none
    assert load_settings({}, root=tmp_path).api_url == "http://from-dotenv"

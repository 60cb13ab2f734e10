"""dlt's packages extracted or normalized but not loaded hold records as the API served them: an
erasure drops them through dlt's own API, and nothing of the user is left in dlt's working
directory."""

from __future__ import annotations

from pathlib import Path

from ingestion.config import IngestionConfig
from ingestion.pipeline import make_pipeline
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from privacy.outer_stores import drop_pending_packages

EMAIL = "pending.forget.me@example.org"
NEVER_REACHED = "postgresql://mvx_privacy_login:unused@127.0.0.1:9/moovitamix"  # dlt loads nothing


def _holds_the_user(directory: Path) -> bool:
    return any(
        EMAIL in path.read_text(errors="ignore") for path in directory.rglob("*") if path.is_file()
    )


def test_pending_packages_are_dropped_and_hold_nothing_of_the_user(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    url = ConnectionURL.parse(NEVER_REACHED)
    pipeline, _ = make_pipeline(settings, url, IngestionConfig(progress=False), "postgres")
    record = [{"id": 77, "email": EMAIL}]
    pipeline.extract(record, table_name="users")
    pipeline.normalize()  # one package normalized, the next only extracted
    pipeline.extract(record, table_name="users")
    assert _holds_the_user(Path(pipeline.working_dir))

    assert drop_pending_packages(settings, url) == 2
    assert drop_pending_packages(settings, url) == 0  # done: nothing more
    assert not _holds_the_user(Path(pipeline.working_dir))

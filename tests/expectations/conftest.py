"""Fixtures of the monitoring layer's tests: a private copy of the committed GX context, a
validation runner that collects alerts, and a webhook on a loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moovitamix.alerts import Alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import Settings, load_settings

COMMITTED_GX_YML = Path(__file__).resolve().parents[2] / "expectations/gx/great_expectations.yml"


@pytest.fixture
def gx_dir(tmp_path: Path) -> Path:
    """The committed GX context (its YAML only, as in a fresh clone), in a temp dir."""
    target = tmp_path / "gx"
    target.mkdir()
    shutil.copy(COMMITTED_GX_YML, target / "great_expectations.yml")
    return target


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"MOOVITAMIX_LOGS_DIR": str(tmp_path / "logs")}, root=tmp_path)


@dataclass
class Validator:
    """run_validation with the test's GX dir, alerts collected instead of sent."""

    settings: Settings
    gx_dir: Path
    alerts: list[Alert] = field(default_factory=list)

    def __call__(self, url: ConnectionURL, run_id: str, **options: Any) -> Any:
        from expectations.validate import run_validation

        options.setdefault("build_docs", False)
        options.setdefault("alert", self.alerts.append)
        return run_validation(self.settings, run_id, url, gx_dir=self.gx_dir, **options)


@pytest.fixture
def validate(settings: Settings, gx_dir: Path) -> Validator:
    return Validator(settings, gx_dir)


Execute = Callable[..., None]


@pytest.fixture
def sql(fresh_warehouse: ConnectionURL) -> Execute:
    """Run statements on the test's warehouse: sql("update ...", params)."""
    import psycopg

    def execute(statement: str, params: Any = None) -> None:
        with psycopg.connect(fresh_warehouse.url()) as conn:
            conn.execute(statement, params)

    return execute

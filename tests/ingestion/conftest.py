"""Fixtures of the ingestion tests: run the ingestion in-process against a simulator over
HTTP into a fresh embedded Postgres database (helpers: ingestion_helpers.py)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingestion.pipeline import IngestionResult, run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings
from tests.conftest import create_warehouse
from tests.ingestion.ingestion_helpers import TEST_CONFIG, Ingest, Raw


@pytest.fixture
def raw(warehouse_env: ConnectionURL) -> Raw:
    return Raw(warehouse_env)


@pytest.fixture
def another_warehouse(admin_url: ConnectionURL) -> ConnectionURL:
    """A second fresh warehouse database, for comparing two runs."""
    return create_warehouse(admin_url, prefix="mvx_ingestion")


@pytest.fixture
def ingest(warehouse_env: ConnectionURL, tmp_path: Path) -> Ingest:
    """Run the ingestion in-process: `ingest(api_url, warehouse=None, **config_changes)`
    (into `warehouse_env` unless another warehouse is given)."""

    def run(
        api_url: str,
        *,
        warehouse: ConnectionURL | None = None,
        transport: httpx.BaseTransport | None = None,
        **changes: Any,
    ) -> IngestionResult:
        env = dict(os.environ)
        if warehouse is not None:
            env["WAREHOUSE_URL"] = warehouse.url()
            env["MOOVITAMIX_DATA_DIR"] = str(tmp_path / f"data-{warehouse.database}")
        settings = load_settings(env)
        config = replace(TEST_CONFIG, **changes)
        return run_ingestion(
            settings, new_run_id(), api_url=api_url, config=config, transport=transport
        )

    return run

"""Fixtures of the ML tests: small synthetic marts with structure ALS can learn, and a config
that keeps every run fast and its artifacts in the test's temp dir.

The embedded Postgres and `fresh_warehouse` come from tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ml.config import MlConfig, load_config
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import Settings, load_settings
from moovitamix.warehouse import connect
from tests.ml.synthetic import SyntheticMarts, generate, write_marts

# Listens follow genres, popularity and "scenes" inside genres that only collaborative
# filtering can pick up (tests/ml/synthetic.py): ALS has something to beat the baselines with.
STRUCTURED = {"n_users": 1200, "n_tracks": 400, "seed": 5, "clusters_per_genre": 4}


@pytest.fixture(scope="session")
def structured_marts() -> SyntheticMarts:
    return generate(**STRUCTURED)


@pytest.fixture
def marts_url(fresh_warehouse: ConnectionURL, structured_marts: SyntheticMarts) -> ConnectionURL:
    """A fresh warehouse whose input marts hold `structured_marts`."""
    with connect(fresh_warehouse) as conn:
        write_marts(conn, structured_marts)
    return fresh_warehouse


def small_config(tmp_path: Path, *overrides: str) -> MlConfig:
    return load_config(
        values={
            "model": {"factors": 32, "confidence": "bm25", "alpha": 1.0, "regularization": 1.0},
            "runtime": {"num_threads": 1},
            "selection": {"max_challengers": 2},
            "search": {
                "families": ["als", "item_knn"],
                "als": {"factors": [16, 32], "iterations": [10, 15]},
            },
            # windows of 10% of the pairs: the synthetic histories' last day holds few users
            "evaluation": {"resamples": 200, "valid_days": 0.0, "test_days": 0.0},
            "artifacts": {"root": str(tmp_path / "artifacts")},
        },
        overrides=overrides,
    )


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., MlConfig]:
    """Fast settings (few factors and challengers, one thread, artifacts under tmp_path),
    with `section.key=value` overrides: `make_config("artifacts.keep=1")`."""
    return lambda *overrides: small_config(tmp_path, *overrides)


@pytest.fixture
def ml_config(tmp_path: Path) -> MlConfig:
    return small_config(tmp_path)


@pytest.fixture
def ml_settings(tmp_path: Path) -> Settings:
    """Settings rooted in the test's temp dir (no .env, logs and artifacts stay there)."""
    return load_settings({}, root=tmp_path)

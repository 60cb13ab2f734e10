"""Fixtures of the serving tests: a warehouse with synthetic marts and a trained, published
model (ml's own training, run as mvx_ml as in the daily run), and the API served by uvicorn on
a free loopback port in a thread, spoken to over real HTTP."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from ml.config import MlConfig, load_config
from ml.train import run_training
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import APP, ML, as_role, ensure_roles
from moovitamix.settings import Settings, load_settings
from moovitamix.warehouse import connect
from serving.app import create_app
from serving.config import ServingConfig
from tests.conftest import create_warehouse
from tests.ml.synthetic import SyntheticMarts, generate, write_marts
from tests.waiting import wait_until

TOKEN = "s3cret-token"
HASHED_TOKEN = "another-token"  # configured as its sha256 only
MARTS = {"n_users": 1200, "n_tracks": 400, "seed": 5, "clusters_per_genre": 4}


@dataclass
class Trained:
    url: ConnectionURL  # the warehouse user's (superuser) URL
    settings: Settings
    artifacts: Path
    marts: SyntheticMarts


def training_config(artifacts: Path, *overrides: str) -> MlConfig:
    return load_config(
        values={
            # beats the baselines on these marts
            "model": {"factors": 32, "alpha": 5.0, "regularization": 1.0, "confidence": "log"},
            "runtime": {"num_threads": 1},
            "selection": {"max_challengers": 0},
            "artifacts": {"root": str(artifacts), "keep": 10},
        },
        overrides=overrides,
    )


def train(trained: Trained, run_id: str, *overrides: str, **kwargs: object) -> str:
    """One training run as mvx_ml, published; returns the model run id that serves."""
    config = training_config(trained.artifacts, *overrides)
    result = run_training(
        trained.settings,
        run_id,
        config=config,
        warehouse=as_role(trained.url, ML),
        champion_from_config=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return result.serving_model_run_id


def make_warehouse(admin_url: ConnectionURL, root: Path, marts: SyntheticMarts) -> Trained:
    """A warehouse with the input marts and the roles, nothing published yet."""
    url = create_warehouse(admin_url, "mvx_serving")
    with connect(url) as conn:
        write_marts(conn, marts)
    ensure_roles(url)  # the marts' readers, the impressions table
    with connect(url) as conn:  # what dbt's grants config gives fct_listens
        conn.execute(f"grant select on marts.fct_listens to {APP}")
    settings = load_settings(
        {"WAREHOUSE_URL": url.url(), "MOOVITAMIX_DATA_DIR": str(root / "data")}, root=root
    )
    return Trained(url, settings, root / "artifacts", marts)


def make_trained(admin_url: ConnectionURL, root: Path, marts: SyntheticMarts) -> Trained:
    trained = make_warehouse(admin_url, root, marts)
    train(trained, "20261201T000000Z-aaaaaa")
    return trained


@pytest.fixture(scope="module")
def trained(admin_url: ConnectionURL, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Shared by read-only tests."""
    return make_trained(admin_url, tmp_path_factory.mktemp("serving"), generate(**MARTS))


@pytest.fixture
def fresh_trained(admin_url: ConnectionURL, tmp_path: Path) -> Trained:
    """For tests that publish again."""
    return make_trained(admin_url, tmp_path, generate(**MARTS))


def config(trained: Trained, **changes: object) -> ServingConfig:
    hashed = "sha256:" + hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()
    values: dict[str, object] = {
        "tokens": (TOKEN, hashed),
        "poll_s": 0.2,
        "flush_s": 0.1,
        "artifacts": trained.artifacts,
    }
    return ServingConfig.model_validate({**values, **changes})


@contextmanager
def running_api(
    settings: Settings, serving: ServingConfig, **uvicorn_options: object
) -> Iterator[httpx.Client]:
    """The app under uvicorn on a free loopback port; an httpx client with the token.
    `uvicorn_options` go to uvicorn.Config (by default it logs warnings only)."""
    options: dict[str, object] = {"log_level": "warning", **uvicorn_options}
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, serving), host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the API to start")
    if not server.started:
        raise RuntimeError("the API did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


ApiFactory = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture(scope="module")
def api(trained: Trained) -> Iterator[httpx.Client]:
    with running_api(trained.settings, config(trained)) as client:
        yield client


def wait_for(check: Callable[[], bool], timeout_s: float = 30) -> None:
    """Poll `check` until it holds (a bound on waiting, not a speed assertion)."""
    wait_until(check, "the condition", timeout_s)

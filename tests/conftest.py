"""Session fixtures shared by every test: a throw-away embedded Postgres and the API simulator
served over real HTTP on a free loopback port.

Nothing here touches the developer's `.data/` or `.env`: the server lives in a pytest temp dir,
and each test that writes gets a fresh database of its own (`fresh_warehouse`). The plugin
tests/hermetic.py seals the session: no dotenv file, every setting of the project's set or
removed, the repo unchanged, no connection beyond loopback. Whole runs start from a copy of the
project (`project_copy`), so what they write stays out of the repo.

A second server: a test that takes the `pg_server` fixture (through `pg_admin_url`) runs on the
embedded Postgres, and also on a throw-away cluster of the distribution's own package
(tests/system_postgres.py: TCP and scram passwords) when marked `pg_servers("embedded",
"system")`. `--pg-server embedded|system` keeps one. Where the distribution's server is missing,
its tests skip, except in CI (`CI=true` or MOOVITAMIX_REQUIRE_SYSTEM_PG=1), where they fail.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from moovitamix.connection_url import ConnectionURL
from moovitamix.embedded_warehouse import EmbeddedWarehouse
from moovitamix.roles import SCHEMAS
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.simulator_process import running_simulator
from moovitamix.spark import spark_session
from tests.system_postgres import BIN_ENV, SystemPostgres, SystemPostgresError, find_bin_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The seal: no .env, a sealed environment, the repo and network guards (tests/hermetic.py).
pytest_plugins = ["tests.hermetic"]

# A throw-away cluster needs no durability: skip the fsyncs.
TEST_SERVER_OPTIONS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
_database_numbers = itertools.count(1)
PG_SERVERS = ("embedded", "system")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-server",
        action="append",
        choices=PG_SERVERS,
        help="run the tests that take `pg_server` on this server only (repeatable; default: "
        "each on the servers its pg_servers marker names, the embedded one when unmarked)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pg_servers(*names): the servers (embedded, system) a test taking pg_server runs on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_server" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("pg_servers")
    wanted = marker.args if marker else ("embedded",)
    chosen = metafunc.config.getoption("--pg-server") or PG_SERVERS
    servers = [name for name in PG_SERVERS if name in wanted and name in chosen]
    metafunc.parametrize("pg_server", servers, indirect=True, scope="session")


def system_server_required() -> bool:
    """In CI a missing second server is a failure, never a skip."""
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("MOOVITAMIX_REQUIRE_SYSTEM_PG")
    )


@pytest.fixture(scope="session", autouse=True)
def _offline(tmp_path_factory: pytest.TempPathFactory) -> None:
    apply_offline_defaults()


@pytest.fixture(scope="session")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's code in a temp dir (no .env, .venv linked): the project root of the runs
    the tests start as subprocesses, where they write reports/, artifacts/, dbt's target/ and
    GX's uncommitted/."""
    from tests.hermetic import copy_project  # the plugin's: imported once pytest has loaded it

    return copy_project(tmp_path_factory.mktemp("project") / "moovitamix")


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedWarehouse]:
    server = EmbeddedWarehouse(
        tmp_path_factory.mktemp("pg") / "postgres", server_options=TEST_SERVER_OPTIONS
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_url(embedded_server: EmbeddedWarehouse) -> ConnectionURL:
    """Superuser URL of the `postgres` database of the test server."""
    return embedded_server.start()


@pytest.fixture(scope="session")
def system_server() -> Iterator[SystemPostgres]:
    """A throw-away cluster of the distribution's Postgres (scram passwords over loopback TCP)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        why = f"no distribution Postgres server (apt-get install postgresql, or set {BIN_ENV})"
        if system_server_required():
            pytest.fail(why)
        pytest.skip(why)
    try:
        server = SystemPostgres(bin_dir, server_options=TEST_SERVER_OPTIONS)
        server.start()
    except SystemPostgresError as exc:
        pytest.fail(f"the distribution's Postgres in {bin_dir} did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def system_admin_url(system_server: SystemPostgres) -> ConnectionURL:
    """Superuser URL (TCP, password) of the `postgres` database of the second server."""
    return system_server.admin_url()


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> str:
    """The server a parametrized test runs on: "embedded" or "system"."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: str, request: pytest.FixtureRequest) -> ConnectionURL:
    """Superuser URL of the `postgres` database of the server `pg_server` names."""
    fixture = "admin_url" if pg_server == "embedded" else "system_admin_url"
    return request.getfixturevalue(fixture)


def create_warehouse(admin_url: ConnectionURL, prefix: str = "mvx_test") -> ConnectionURL:
    """A new, empty warehouse database with the design's schemas, on the test server."""
    name = f"{prefix}_{next(_database_numbers)}"
    with psycopg.connect(admin_url.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = admin_url.with_database(name)
    with psycopg.connect(url.url(), autocommit=True) as conn:
        for schema in SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    return url


@pytest.fixture
def fresh_warehouse(admin_url: ConnectionURL) -> ConnectionURL:
    """A new, empty warehouse database (with the design's schemas) for one test."""
    return create_warehouse(admin_url)


@pytest.fixture
def warehouse_env(
    fresh_warehouse: ConnectionURL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ConnectionURL:
    """`fresh_warehouse`, exported as WAREHOUSE_URL (with private data and logs dirs) for the
    code under test and the subprocesses it starts."""
    return export_warehouse(fresh_warehouse, monkeypatch, tmp_path)


def export_warehouse(
    url: ConnectionURL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> ConnectionURL:
    """`url` as WAREHOUSE_URL, with data and logs dirs under `tmp_path`, for the test."""
    monkeypatch.setenv("WAREHOUSE_URL", url.url())
    monkeypatch.setenv("MOOVITAMIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MOOVITAMIX_LOGS_DIR", str(tmp_path / "logs"))
    return url


@dataclass
class Webhook:
    url: str
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A real HTTP endpoint on 127.0.0.1 that records the JSON bodies POSTed to it and answers
    `status` (set it to make the webhook fail)."""
    hook = Webhook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            hook.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield hook
    server.shutdown()
    server.server_close()


SimulatorFactory = Callable[..., str]


@pytest.fixture(scope="session")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator at a small realistic scale, shared by read-only tests."""
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    with running_simulator(
        ["--seed", "7", "--users", "300", "--tracks", "200"], log_path=log
    ) as url:
        yield url


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[SimulatorFactory]:
    """Start simulators with the given flags for one test: `start_simulator("--seed", "3")`."""
    with ExitStack() as stack:
        logs = itertools.count(1)

        def start(*args: str, extra: Sequence[str] = ()) -> str:
            log = tmp_path / f"simulator-{next(logs)}.log"
            return stack.enter_context(running_simulator([*args, *extra], log_path=log))

        yield start


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the Spark engine whose files (metastore, tables, lake) live in a temp dir."""
    data_dir = tmp_path_factory.mktemp("spark-engine")
    settings = load_settings({}, root=data_dir)  # no .env of the developer's
    return replace(settings, data_dir=data_dir, engine="spark", spark_master="local[2]")


@pytest.fixture(scope="session")
def spark(spark_settings: Settings) -> Iterator[SparkSession]:
    """The test process's one Spark session (one JVM: its Derby metastore admits no other).
    Tests that use it drop the databases they create, so each starts from a clean catalog."""
    session = spark_session(spark_settings)
    yield session
    session.stop()

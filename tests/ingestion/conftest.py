"""Fixtures of the ingestion tests: run the ingestion in-process against a simulator over
HTTP into a fresh embedded Postgres database (helpers: ingestion_helpers.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from ingestion.pipeline import IngestionResult, run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings
from tests.conftest import create_warehouse
from tests.ingestion.ingestion_helpers import TEST_CONFIG, FakeApi, Ingest, Raw


@pytest.fixture
def raw(warehouse_env: ConnectionURL) -> Raw:
    return Raw(warehouse_env)


@pytest.fixture
def another_warehouse(admin_url: ConnectionURL) -> ConnectionURL:
    """A second fresh warehouse database, for comparing two runs."""
    return create_warehouse(admin_url, prefix="mvx_ingestion")


class _Pages(BaseHTTPRequestHandler):
    """Serves `records` (set on a subclass) by endpoint, paged as the API does."""

    records: ClassVar[dict[str, list[Any]]] = {}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        served = self.records[url.path.strip("/")]
        query = dict(parse_qsl(url.query))
        page, size = int(query["page"]), int(query["size"])
        body = orjson.dumps(
            {
                "items": served[(page - 1) * size : page * size],
                "total": len(served),
                "page": page,
                "size": size,
                "pages": -(-len(served) // size),
            }
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    """An API the simulator cannot play, over real HTTP: `fake_api(records) -> url`."""
    servers: list[ThreadingHTTPServer] = []

    def serve(records: dict[str, list[Any]]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("P", (_Pages,), {"records": records}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ingest(warehouse_env: ConnectionURL, tmp_path: Path) -> Ingest:
    """Run the ingestion in-process: `ingest(api_url, warehouse=None, **config_changes)`
    (into `warehouse_env` unless another warehouse is given)."""

    def run(
        api_url: str,
        *,
        warehouse: ConnectionURL | None = None,
        **changes: Any,
    ) -> IngestionResult:
        env = dict(os.environ)
        if warehouse is not None:
            env["WAREHOUSE_URL"] = warehouse.url()
            env["MOOVITAMIX_DATA_DIR"] = str(tmp_path / f"data-{warehouse.database}")
        settings = load_settings(env)
        config = replace(TEST_CONFIG, **changes)
        return run_ingestion(settings, new_run_id(), api_url=api_url, config=config)

    return run

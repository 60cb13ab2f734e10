"""What the ingestion tests share: the test configuration, reading the API and raw back,
and running `python -m ingestion` as cron would."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ingestion.config import IngestionConfig
from ingestion.moovitamix_source.contract import ENDPOINTS
from ingestion.pipeline import IngestionResult
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import PROJECT_ROOT

Ingest = Callable[..., IngestionResult]
FakeApi = Callable[[dict[str, list[Any]]], str]

# Quick to give up and to time out, so fault tests stay short.
TEST_CONFIG = IngestionConfig(
    concurrency=4,
    backoff_base_s=0.01,
    max_retry_delay_s=0.2,
    connect_timeout_s=2.0,
    read_timeout_s=1.0,
    progress=False,
)
TIMESTAMP_FIELDS = {"created_at", "updated_at"}


def fetch_all(api_url: str, endpoint: str) -> list[dict[str, Any]]:
    """Every record of an endpoint as the API serves it (sequentially, no retries)."""
    records: list[dict[str, Any]] = []
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for page in itertools.count(1):
            body = client.get(f"/{endpoint}", params={"page": page, "size": 100}).json()
            records.extend(body["items"])
            if len(body["items"]) < 100:
                return records
    raise AssertionError("unreachable")


def admin(api_url: str, **state: Any) -> dict[str, Any]:
    """Change the simulator's day and/or faults (POST /_admin/state)."""
    response = httpx.post(f"{api_url}/_admin/state", json=state, timeout=60)
    response.raise_for_status()
    return response.json()


def api_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class Raw:
    """Read-only views of schema raw (and monitoring) of one warehouse database."""

    def __init__(self, url: ConnectionURL) -> None:
        self.url = url

    def rows(self, query: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.url.url(), row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def value(self, query: str, params: tuple | dict = ()) -> Any:
        return next(iter(self.rows(query, params)[0].values()))

    def exists(self, table: str) -> bool:
        return self.value("select to_regclass(%s) is not null as e", (table,))

    def versions(self, endpoint: str) -> list[dict[str, Any]]:
        key = ENDPOINTS[endpoint].key
        return self.rows(f"select * from raw.{endpoint} order by {key}, _dlt_valid_from")

    def current(self, endpoint: str) -> dict[int, dict[str, Any]]:
        key = ENDPOINTS[endpoint].key
        rows = self.rows(f"select * from raw.{endpoint} where _dlt_valid_to is null")
        by_key = {row[key]: row for row in rows}
        assert len(by_key) == len(rows), f"{endpoint}: two current versions of one id"
        return by_key

    def items(self) -> dict[str, list[int]]:
        """Track ids per listen_history version (record_hash), in position order."""
        out: dict[str, list[int]] = {}
        for row in self.rows(
            "select record_hash, position, track_id from raw.listen_history__items "
            "order by record_hash, position"
        ):
            positions = out.setdefault(row["record_hash"], [])
            assert row["position"] == len(positions), "positions are 0..n-1"
            positions.append(row["track_id"])
        return out

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every table of raw, for before/after comparisons."""
        tables = [
            r["table_name"]
            for r in self.rows(
                "select table_name from information_schema.tables where table_schema = 'raw'"
            )
        ]
        out = {}
        with psycopg.connect(self.url.url()) as conn:
            for table in sorted(tables):
                rows = conn.execute(
                    sql.SQL("select * from {}").format(sql.Identifier("raw", table))
                )
                out[table] = sorted(rows.fetchall(), key=repr)
        return out

    def stats(self, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self.rows("select * from monitoring.ingestion_stats where run_id = %s", (run_id,))
        return {row["endpoint"]: row for row in rows}


def assert_raw_matches_api(raw: Raw, api_url: str) -> None:
    """The current versions in raw are exactly the API's records, field by field."""
    items = raw.items()
    for endpoint, spec in ENDPOINTS.items():
        served = fetch_all(api_url, endpoint)
        current = raw.current(endpoint)
        assert len(current) == len(served), endpoint
        for record in served:
            row = current[record[spec.key]]
            for field, value in record.items():
                if field == "items":
                    assert row["item_count"] == len(value)
                    assert items.get(row["record_hash"], []) == value, "items, in order"
                elif field in TIMESTAMP_FIELDS:
                    assert row[field] == api_time(value), (endpoint, field)
                else:
                    assert row[field] == value, (endpoint, field)


def run_cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m ingestion ARGS` as cron would run it."""
    return subprocess.run(
        [sys.executable, "-m", "ingestion", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

"""The same source into dlt's DuckDB destination: day 0 and day 1 (scd2, with rejects, a new
field and deletions) leave the same row sets in DuckDB as in Postgres."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ingestion.moovitamix_source.contract import ENDPOINTS
from ingestion.pipeline import run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings
from tests.ingestion.ingestion_helpers import TEST_CONFIG, Ingest, Raw, admin, run_cli

VOLATILE = {"_dlt_id", "_dlt_load_id", "_dlt_valid_from", "run_id", "rejected_at"}
TABLES = (*ENDPOINTS, "listen_history__items", "_rejected")


def rows_of(rows: list[dict[str, Any]]) -> list[tuple]:
    """Comparable rows: volatile columns dropped, JSON as sorted text, timestamps in UTC,
    retirement as a flag (each destination ran at its own instant)."""

    def value(key: str, v: Any) -> Any:
        if key == "_dlt_valid_to":
            return v is not None
        if isinstance(v, dict | list):
            return json.dumps(v, sort_keys=True)
        return v.astimezone(UTC) if isinstance(v, datetime) else v

    return sorted(
        (tuple(sorted((k, value(k, v)) for k, v in r.items() if k not in VOLATILE)) for r in rows),
        key=repr,
    )


def duckdb_rows(path: Path, table: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        cursor = conn.execute(f'select * from raw."{table}"')
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:  # a new field: JSON in DuckDB, json in Postgres
        if row.get("note") is not None:
            row["note"] = json.loads(row["note"])
    return rows


def test_duckdb_holds_the_same_rows_as_postgres(
    start_simulator: Callable[..., str],
    ingest: Ingest,
    raw: Raw,
    warehouse_env: ConnectionURL,
    tmp_path: Path,
) -> None:
    url = start_simulator(
        "--seed", "5", "--users", "300", "--tracks", "200", "--fault", "*:bad_records=0.02",
        "--fault", "users:hostile=2", "--fault", "listen_history:hostile=2",
    )  # fmt: skip
    path = tmp_path / "moovitamix.duckdb"  # not raw.duckdb: its catalog would be "raw"
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(path)  # dlt's own setting
    settings = load_settings(dict(os.environ))
    try:
        for day in (0, 1):
            admin(url, day=day)
            ingest(url, max_reject_share=0.2)
            result = run_ingestion(
                settings, new_run_id(), api_url=url, destination="duckdb",
                config=replace(TEST_CONFIG, max_reject_share=0.2),
            )  # fmt: skip
            assert result.destination == str(path)
            for table in TABLES:
                assert rows_of(duckdb_rows(path, table)) == rows_of(
                    raw.rows(f"select * from raw.{table}")
                ), (day, table)
        retired = result.tables["users"].retired
        assert retired and retired == raw.stats(result.run_id)["users"]["versions_retired"]
        assert result.endpoints["listen_history"].new_fields == {"note": "note"}
    finally:
        del os.environ["DESTINATION__DUCKDB__CREDENTIALS"]

    env = {**os.environ, "MOOVITAMIX_API_URL": url, "DESTINATION__DUCKDB__CREDENTIALS": str(path)}
    done = run_cli("--destination", "duckdb", "--max-reject-share", "0.2", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert str(path) in done.stdout + done.stderr
    loads = duckdb_rows(path, "_dlt_loads")
    assert len(loads) == 3 and all(r["status"] == 0 for r in loads)

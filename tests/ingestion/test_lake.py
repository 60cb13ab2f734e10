"""The ingestion into the Parquet lake (dlt's filesystem destination), end to end: the
simulator over real HTTP, the embedded Postgres as control plane, the lake in a temp dir, read
back with pyarrow.dataset (hive partitions) the way Spark reads it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from ingestion.lake import lake_bucket_url
from ingestion.moovitamix_source import STATS_TABLE
from ingestion.moovitamix_source.contract import ENDPOINTS
from ingestion.pipeline import IngestionFailed, IngestionResult, run_ingestion
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import new_run_id
from moovitamix.settings import load_settings
from tests.ingestion.ingestion_helpers import TEST_CONFIG, Ingest, Raw, admin, fetch_all, run_cli

SIZES = ("--users", "300", "--tracks", "200")
LAKE_ONLY = {"_dlt_id", "_dlt_load_id", "_snapshot_at", "load_id"}
PG_ONLY = {"_dlt_id", "_dlt_load_id", "_dlt_valid_from", "_dlt_valid_to"}
TABLES = ("tracks", "users", "listen_history", "listen_history__items", "_rejected")

IngestLake = Callable[..., IngestionResult]


class Lake:
    """The lake's raw dataset as downstream reads it: completed loads only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def loads(self) -> dict[str, int]:
        """load id -> status, from dlt's `_dlt_loads` (JSON lines)."""
        out = {}
        for path in sorted((self.root / "raw" / "_dlt_loads").glob("*.jsonl")):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                out[row["load_id"]] = row["status"]
        return out

    def completed(self) -> list[str]:
        return sorted(load_id for load_id, status in self.loads().items() if status == 0)

    def partitions(self, table: str) -> set[str]:
        folder = self.root / "raw" / table
        return {p.name.removeprefix("load_id=") for p in folder.glob("load_id=*")}

    def rows(self, table: str, load_id: str) -> list[dict[str, Any]]:
        dataset = ds.dataset(
            self.root / "raw" / table,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("load_id", pa.string())]), flavor="hive"),
        )
        return dataset.to_table(filter=ds.field("load_id") == load_id).to_pylist()

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file()}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture
def ingest_lake(warehouse_env: ConnectionURL, lake: Lake) -> IngestLake:
    """Run the lake ingestion in-process: `ingest_lake(api_url, **config_changes)`."""

    def run(api_url: str, **changes: Any) -> IngestionResult:
        settings = load_settings(dict(os.environ))
        return run_ingestion(
            settings,
            new_run_id(),
            api_url=api_url,
            destination="filesystem",
            bucket_url=lake.url,
            config=replace(TEST_CONFIG, **changes),
        )

    return run


def strip(rows: list[dict[str, Any]], drop: set[str]) -> list[tuple]:
    return sorted((tuple(sorted((k, v) for k, v in r.items() if k not in drop)) for r in rows),
                  key=repr)  # fmt: skip


def test_the_lake_snapshot_equals_the_current_postgres_versions(
    start_simulator: Callable[..., str],
    ingest: Ingest,
    ingest_lake: IngestLake,
    raw: Raw,
    lake: Lake,
) -> None:
    url = start_simulator(
        "--seed", "5", *SIZES, "--fault", "*:bad_records=0.02",
        "--fault", "users:hostile=2", "--fault", "listen_history:hostile=2",
    )  # fmt: skip
    pg = ingest(url, max_reject_share=0.2)
    result = ingest_lake(url, max_reject_share=0.2)

    (load_id,) = lake.completed()
    assert set(result.load_ids.values()) == {load_id}
    assert result.destination == lake.url
    for endpoint in ENDPOINTS:
        lake_rows = lake.rows(endpoint, load_id)
        for row in lake_rows:  # a new field: JSON text in the lake, json in Postgres
            if "note" in row:
                row["note"] = None if row["note"] is None else json.loads(row["note"])
        assert strip(lake_rows, LAKE_ONLY) == strip(
            list(raw.current(endpoint).values()), PG_ONLY
        ), endpoint
        assert {r["_dlt_load_id"] for r in lake_rows} == {load_id}
        assert {r["_snapshot_at"] for r in lake_rows} == {result.boundary}
    # every item of every served history (Postgres holds exactly the current ones here)
    items = lake.rows("listen_history__items", load_id)
    assert strip(items, LAKE_ONLY) == strip(
        raw.rows("select * from raw.listen_history__items"), PG_ONLY
    )
    served = sum(len(r["items"] or []) for r in fetch_all(url, "listen_history"))
    assert 0 < len(items) <= served
    rejected = lake.rows("_rejected", load_id)
    volatile = {"run_id", "rejected_at"}
    assert rejected and strip(rejected, LAKE_ONLY | volatile) == strip(
        raw.rows("select * from raw._rejected"), PG_ONLY | volatile
    )
    assert {r["run_id"] for r in rejected} == {result.run_id} != {pg.run_id}
    assert result.endpoints["listen_history"].new_fields == {"note": "note"}
    reasons = {r["reason"] for r in rejected}
    assert any("NUL" in r for r in reasons) and any("field cap" in r for r in reasons)
    # the stats: in the lake, same load, and in the control plane
    stats = {r["endpoint"]: r for r in lake.rows(STATS_TABLE, load_id)}
    control = raw.stats(result.run_id)
    assert set(stats) == set(control) == set(ENDPOINTS)
    for endpoint, row in stats.items():
        assert row["records"] == control[endpoint]["records"] == pg.endpoints[endpoint].records
        assert row["rejected"] == control[endpoint]["rejected"] > 0
        assert row["load_id"] == control[endpoint]["load_id"] == load_id
        assert row["versions_added"] == len(lake.rows(endpoint, load_id))
    assert stats["listen_history"]["items_added"] == len(items)
    # dlt's own tables are JSON lines; the data tables Parquet in per-load folders
    for table in (*TABLES, STATS_TABLE):
        assert lake.partitions(table) == {load_id}, table
        files = list((lake.root / "raw" / table / f"load_id={load_id}").iterdir())
        assert files and all(f.suffix == ".parquet" for f in files)
    assert lake.loads() == {load_id: 0}


def test_two_runs_append_two_complete_snapshots(
    start_simulator: Callable[..., str], ingest_lake: IngestLake, lake: Lake
) -> None:
    url = start_simulator("--seed", "11", *SIZES)
    first = ingest_lake(url)
    day0 = {e: fetch_all(url, e) for e in ENDPOINTS}
    admin(url, day=1)
    second = ingest_lake(url)
    day1 = {e: fetch_all(url, e) for e in ENDPOINTS}

    one, two = lake.completed()
    assert (first.load_ids["users"], second.load_ids["users"]) == (one, two)
    assert first.boundary < second.boundary
    for served, load_id, boundary in ((day0, one, first.boundary), (day1, two, second.boundary)):
        for endpoint, spec in ENDPOINTS.items():
            rows = lake.rows(endpoint, load_id)
            assert sorted(r[spec.key] for r in rows) == sorted(
                r[spec.key] for r in served[endpoint]
            )
            assert {r["_snapshot_at"] for r in rows} == {boundary}
        items = lake.rows("listen_history__items", load_id)
        by_user: dict[int, list[int]] = {}
        for item in sorted(items, key=lambda i: (i["user_id"], i["position"])):
            by_user.setdefault(item["user_id"], []).append(item["track_id"])
        assert by_user == {r["user_id"]: r["items"] for r in served["listen_history"] if r["items"]}
    # the API changed between the days, and the snapshots differ just as much
    for endpoint, spec in ENDPOINTS.items():
        ids0 = {r[spec.key] for r in day0[endpoint]}
        ids1 = {r[spec.key] for r in day1[endpoint]}
        assert ids0 != ids1
        assert {r[spec.key] for r in lake.rows(endpoint, one)} == ids0
        assert {r[spec.key] for r in lake.rows(endpoint, two)} == ids1


def test_a_rejected_record_keeps_its_last_good_row_in_the_next_snapshot(
    start_simulator: Callable[..., str], ingest_lake: IngestLake, lake: Lake
) -> None:
    """As on Postgres (a rejected record's current version stays current): the new snapshot
    carries the record's row, and a history's list items, from the latest completed one."""
    url = start_simulator("--seed", "3", *SIZES)
    first = ingest_lake(url)
    admin(url, faults={"*": {"bad_records": 0.03}})
    second = ingest_lake(url, max_reject_share=0.2)

    one, two = lake.completed()
    carried_users: set[int] = set()
    for endpoint, spec in ENDPOINTS.items():
        stats = second.endpoints[endpoint]
        assert stats.rejected and stats.carried_forward  # some ids readable, some not
        before = {r[spec.key]: r for r in lake.rows(endpoint, one)}
        after = {r[spec.key]: r for r in lake.rows(endpoint, two)}
        readable = {
            int(r["record_key"])
            for r in lake.rows("_rejected", two)
            if r["endpoint"] == endpoint and (r["record_key"] or "").isdigit()
        }
        carried = readable & set(before)
        assert len(carried) == stats.carried_forward
        # only a record whose id could not be read looks deleted, as on Postgres
        assert len(set(before) - set(after)) == stats.rejected - stats.carried_forward
        assert carried <= set(after)
        assert strip([after[i] for i in carried], LAKE_ONLY) == strip(
            [before[i] for i in carried], LAKE_ONLY
        )
        assert {r["_dlt_load_id"] for r in after.values()} == {two}
        if endpoint == "listen_history":
            carried_users = carried
    items = {
        load_id: [
            i for i in lake.rows("listen_history__items", load_id) if i["user_id"] in carried_users
        ]
        for load_id in (one, two)
    }
    assert items[one] and strip(items[two], LAKE_ONLY) == strip(items[one], LAKE_ONLY)
    assert first.endpoints["listen_history"].carried_forward == 0


def test_a_failing_endpoint_adds_nothing_to_the_lake(
    start_simulator: Callable[..., str], ingest_lake: IngestLake, lake: Lake, raw: Raw
) -> None:
    url = start_simulator("--seed", "3", *SIZES)
    ingest_lake(url)
    before, loads = lake.files(), lake.loads()

    admin(url, day=1, faults={"listen_history": {"always_fail": True}})
    with pytest.raises(IngestionFailed) as failed:
        ingest_lake(url, max_attempts=2)

    assert str(failed.value).startswith("listen_history page 1:")
    assert lake.files() == before and lake.loads() == loads
    failures = raw.stats(failed.value.stats["listen_history"].run_id)
    assert failures["listen_history"]["status"] == "failed"
    assert failures["tracks"]["status"] == "discarded"
    # and the next run is a complete snapshot again, nothing of the failed one left pending
    admin(url, faults={})
    again = ingest_lake(url)
    assert lake.completed() == sorted([*loads, again.load_ids["tracks"]])
    assert len(lake.rows("tracks", again.load_ids["tracks"])) == len(fetch_all(url, "tracks"))


def test_a_failed_load_is_not_complete_and_the_next_run_loads_it_first(
    start_simulator: Callable[..., str], ingest_lake: IngestLake, lake: Lake
) -> None:
    url = start_simulator("--seed", "9", *SIZES)
    (first,) = set(ingest_lake(url).load_ids.values())
    users = lake.root / "raw" / "users"
    users.rename(users.with_name("users.moved"))
    users.write_text("in the way")  # the load cannot make users/load_id=<id>/
    admin(url, day=1)

    with pytest.raises(IngestionFailed, match=r"^loading into the lake .* stays pending"):
        ingest_lake(url)
    assert lake.completed() == [first]  # some files of the load may be there: it is not done

    users.unlink()
    users.with_name("users.moved").rename(users)
    (third,) = set(ingest_lake(url).load_ids.values())
    first_, failed, third_ = lake.completed()  # the pending package loaded first
    assert (first_, third_) == (first, third)
    assert lake.rows("users", failed) and lake.rows("users", third)


def test_too_many_rejects_add_nothing_to_the_lake(
    start_simulator: Callable[..., str], ingest_lake: IngestLake, lake: Lake
) -> None:
    url = start_simulator("--seed", "4", *SIZES, "--fault", "users:bad_records=0.2")
    with pytest.raises(IngestionFailed, match=r"^users: \d+ of 300 records break the contract"):
        ingest_lake(url)
    assert lake.loads() == {} and not (lake.root / "raw" / "users").exists()


def test_the_command_loads_the_lake(
    start_simulator: Callable[..., str], warehouse_env: ConnectionURL, lake: Lake
) -> None:
    url = start_simulator("--seed", "6", "--users", "50", "--tracks", "40")
    env = {**os.environ, "MOOVITAMIX_API_URL": url}
    done = run_cli(
        "--destination", "filesystem", "--bucket-url", lake.url, "--no-progress", env=env
    )
    assert done.returncode == 0, done.stderr
    assert lake.url in done.stdout + done.stderr
    assert len(lake.completed()) == 1

    # dlt's own config names the lake too; the Spark engine defaults to Settings.lake
    other = lake.root.parent / "other"
    env_dlt = {**env, "DESTINATION__FILESYSTEM__BUCKET_URL": other.as_uri()}
    done = run_cli("--destination", "filesystem", "--no-progress", env=env_dlt)
    assert done.returncode == 0, done.stderr
    assert len(Lake(other).completed()) == 1
    done = run_cli("--no-progress", env={**env, "MOOVITAMIX_ENGINE": "spark"})
    assert done.returncode == 0, done.stderr
    settings = load_settings(dict(os.environ))
    assert len(Lake(settings.data_dir / "lake").completed()) == 1
    assert lake_bucket_url(settings) == settings.lake
    assert list((settings.data_dir / "dlt").glob("lake-*/moovitamix_lake"))  # dlt's working dir


def test_the_command_refuses_an_unknown_destination(warehouse_env: ConnectionURL) -> None:
    done = run_cli("--destination", "bigquery", env=dict(os.environ))
    assert done.returncode == 2
    assert "invalid choice: 'bigquery'" in done.stderr
    done = run_cli(
        "--destination", "postgres", "--bucket-url", "file:///tmp/x", env=dict(os.environ)
    )
    assert done.returncode == 2
    assert "--bucket-url needs --destination filesystem" in done.stderr


def test_the_daily_step_on_spark_loads_the_lake(
    start_simulator: Callable[..., str], warehouse_env: ConnectionURL, lake: Lake, raw: Raw
) -> None:
    from ingestion.step import ingest
    from moovitamix.step import RunContext, StepFailed
    from moovitamix.warehouse import open_warehouse

    url = start_simulator("--seed", "8", "--users", "60", "--tracks", "50")
    settings = replace(load_settings(dict(os.environ)), engine="spark", lake_url=lake.url)
    ctx = RunContext(settings, new_run_id(), open_warehouse(settings), url, api_is_simulator=True)
    report = ingest(ctx)

    (load_id,) = lake.completed()
    assert f"into the lake {lake.url} (load {load_id})" in report.summary
    assert report.details["destination"] == lake.url
    assert {r["run_id"] for r in lake.rows(STATS_TABLE, load_id)} == {ctx.run_id}
    assert set(raw.stats(ctx.run_id)) == set(ENDPOINTS)
    assert not raw.exists("raw.tracks")  # the data plane is the lake

    admin(url, faults={"users": {"always_fail": True}})
    failing = replace(ctx, run_id=new_run_id())
    with pytest.raises(StepFailed, match=r"^users page 1:"):
        ingest(failing)
    assert lake.completed() == [load_id]
    assert raw.stats(failing.run_id)["users"]["status"] == "failed"

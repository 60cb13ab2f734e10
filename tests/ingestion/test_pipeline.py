"""The ingestion end to end: the simulator over real HTTP, the embedded Postgres, dlt.

Each test loads into a fresh database and compares raw with what the API served.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import orjson
import psycopg
import pytest

from ingestion.config import IngestionConfig
from ingestion.moovitamix_source.contract import ENDPOINTS, record_hash
from ingestion.pipeline import LOADER_SETTINGS, IngestionFailed, make_pipeline
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from tests.ingestion.ingestion_helpers import (
    FakeApi,
    Ingest,
    Raw,
    admin,
    assert_raw_matches_api,
    fetch_all,
)

SIZES = ("--users", "300", "--tracks", "200")
DLT_VOLATILE = {"_dlt_id", "_dlt_load_id", "_dlt_valid_from", "_dlt_valid_to", "rejected_at"}


def content(raw: Raw) -> dict[str, list[tuple]]:
    """Raw without what differs between two equal loads (dlt ids, load ids, timestamps)."""
    out = {}
    for table in ("tracks", "users", "listen_history", "listen_history__items", "_rejected"):
        if not raw.exists(f"raw.{table}"):
            continue
        rows = raw.rows(f"select * from raw.{table}")
        out[table] = sorted(
            (tuple(v for k, v in row.items() if k not in DLT_VOLATILE and k != "run_id")
             for row in rows),
            key=repr,
        )  # fmt: skip
    return out


def test_full_load_equals_the_api(simulator_url: str, ingest: Ingest, raw: Raw) -> None:
    result = ingest(simulator_url)

    assert_raw_matches_api(raw, simulator_url)
    stats = raw.stats(result.run_id)
    for endpoint in ENDPOINTS:
        served = fetch_all(simulator_url, endpoint)
        s = result.endpoints[endpoint]
        assert s.records == s.api_total == len(served) == s.versions_added
        assert s.rejected == 0 and s.status == "loaded" and s.load_id
        assert stats[endpoint]["records"] == len(served)
        assert stats[endpoint]["load_id"] == result.load_ids[endpoint]
        assert stats[endpoint]["pages"] == -(-len(served) // 100)
        assert stats[endpoint]["requests"] >= stats[endpoint]["pages"]
        assert stats[endpoint]["bytes"] > 0
        for row in raw.versions(endpoint):
            assert row["_dlt_load_id"] == result.load_ids[endpoint]
            assert row["_dlt_valid_from"] == result.boundary
    items = sum(len(r["items"]) for r in fetch_all(simulator_url, "listen_history"))
    assert raw.value("select count(*) from raw.listen_history__items") == items
    assert result.items_added == items
    loads = raw.rows("select load_id, status from raw._dlt_loads")
    assert [r["load_id"] for r in loads] == list(set(result.load_ids.values()))  # one package
    assert all(r["status"] == 0 for r in loads)


def test_a_second_run_on_the_same_day_adds_nothing(
    simulator_url: str, ingest: Ingest, raw: Raw
) -> None:
    ingest(simulator_url)
    before = content(raw)
    versions = {e: raw.versions(e) for e in ENDPOINTS}

    again = ingest(simulator_url)

    assert content(raw) == before
    assert {e: raw.versions(e) for e in ENDPOINTS} == versions  # no version, no retirement
    for s in again.endpoints.values():
        assert (s.versions_added, s.versions_retired) == (0, 0)
    assert again.endpoints["listen_history"].items_added == 0


def test_the_loaders_sessions_run_as_the_loader_with_room_to_hash_the_scd2_merge(
    warehouse_env: ConnectionURL,
) -> None:
    """dlt's scd2 merge is `NOT IN (current hashes)`: past work_mem Postgres drops the hash for
    a row-by-row scan (a rerun at a million users never ended). A URL's libpq options win over
    PGOPTIONS, so the setting must be in the URL dlt gets."""
    pipeline, _ = make_pipeline(load_settings(), warehouse_env, IngestionConfig(), "postgres")
    with pipeline.sql_client() as client:
        settings = client.execute_sql("select current_user, current_setting('work_mem')")
    assert [tuple(row) for row in settings] == [("mvx_loader", LOADER_SETTINGS["work_mem"])]


def test_day_two_adds_versions_and_retires_deleted_records(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "11", *SIZES)
    ingest(url)
    day0 = {e: {r[ENDPOINTS[e].key]: r for r in fetch_all(url, e)} for e in ENDPOINTS}
    before = {e: {(r[ENDPOINTS[e].key]): r for r in raw.versions(e)} for e in ENDPOINTS}
    items_before = raw.value("select count(*) from raw.listen_history__items")

    state = admin(url, day=1)
    assert state["day"] == 1
    second = ingest(url)
    day1 = {e: {r[ENDPOINTS[e].key]: r for r in fetch_all(url, e)} for e in ENDPOINTS}

    assert_raw_matches_api(raw, url)
    changed_total = Counter()
    for endpoint in ENDPOINTS:
        old, new = day0[endpoint], day1[endpoint]
        added = new.keys() - old.keys()
        deleted = old.keys() - new.keys()
        edited = {k for k in old.keys() & new.keys() if record_hash(old[k]) != record_hash(new[k])}
        same = (old.keys() & new.keys()) - edited
        changed_total.update(added=len(added), deleted=len(deleted), edited=len(edited))

        rows: dict[int, list[dict]] = {}
        for row in raw.versions(endpoint):
            rows.setdefault(row[ENDPOINTS[endpoint].key], []).append(row)
        boundary = second.boundary
        for key in same:  # nothing else moves
            assert rows[key] == [before[endpoint][key]]
        for key in deleted:
            (version,) = rows[key]
            assert version == {**before[endpoint][key], "_dlt_valid_to": boundary}
        for key in edited:
            retired, current = rows[key]
            assert retired == {**before[endpoint][key], "_dlt_valid_to": boundary}
            assert current["_dlt_valid_from"] == boundary and current["_dlt_valid_to"] is None
            assert current["_dlt_load_id"] == second.load_ids[endpoint]
        for key in added:
            (version,) = rows[key]
            assert version["_dlt_valid_from"] == boundary and version["_dlt_valid_to"] is None
        s = second.endpoints[endpoint]
        assert s.versions_added == len(added) + len(edited)
        assert s.versions_retired == len(deleted) + len(edited)

    assert changed_total["added"] and changed_total["deleted"] and changed_total["edited"]
    new_items = sum(
        len(day1["listen_history"][k]["items"])
        for k in day1["listen_history"]
        if k not in day0["listen_history"]
        or record_hash(day0["listen_history"][k]) != record_hash(day1["listen_history"][k])
    )
    items_after = raw.value("select count(*) from raw.listen_history__items")
    assert items_after == items_before + new_items  # every version's items exactly once


def test_faults_leave_the_warehouse_as_a_clean_run_does(
    simulator_url: str,
    start_simulator: Callable[..., str],
    ingest: Ingest,
    raw: Raw,
    another_warehouse: ConnectionURL,
) -> None:
    faults = (
        "*:http_5xx=0.1,http_429=0.1,retry_after_s=0.2,timeout=0.04,timeout_s=3,"
        "drop=0.05,malformed=0.05"
    )
    faulty_url = start_simulator("--seed", "7", *SIZES, "--fault", faults)

    ingest(simulator_url, page_size=20)
    faulty = ingest(faulty_url, warehouse=another_warehouse, page_size=20)

    retries: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for s in faulty.endpoints.values():
        retries.update(s.retries)
        errors.update(s.http_errors)
    assert set(retries) == {"http_5xx", "http_429", "timeout", "connection", "malformed_json"}
    assert errors["429"] == retries["http_429"]
    assert content(Raw(another_warehouse)) == content(raw)
    assert_raw_matches_api(Raw(another_warehouse), simulator_url)  # same seed, same data


def test_bad_records_are_quarantined_with_their_reasons(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "3", *SIZES, "--fault", "*:bad_records=0.03")
    result = ingest(url, max_reject_share=0.2)

    rejected = raw.rows("select * from raw._rejected")
    by_endpoint = Counter(r["endpoint"] for r in rejected)
    for endpoint in ENDPOINTS:
        s = result.endpoints[endpoint]
        assert s.rejected == by_endpoint[endpoint] > 0
        assert len(raw.current(endpoint)) == s.api_total - s.rejected  # the good ones all in
    served = {e: fetch_all(url, e) for e in ENDPOINTS}
    for row in rejected:
        assert row["reason"] and row["run_id"] == result.run_id
        assert row["_dlt_load_id"] == result.load_ids[row["endpoint"]]
        assert orjson.loads(row["payload"]) in served[row["endpoint"]]  # as served
    reasons = " ".join(r["reason"] for r in rejected)
    for expected in ("unparsable timestamp", "not an integer", "missing"):
        assert expected in reasons
    stats = raw.stats(result.run_id)
    assert sum(s["rejected"] for s in stats.values()) == len(rejected)


def test_a_rejected_record_keeps_its_current_version(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "3", *SIZES)
    ingest(url)
    before = {e: raw.versions(e) for e in ENDPOINTS}

    admin(url, faults={"*": {"bad_records": 0.03}})
    result = ingest(url, max_reject_share=0.2)

    for endpoint in ENDPOINTS:
        s = result.endpoints[endpoint]
        assert s.rejected and s.carried_forward  # ids readable: kept as they were
        assert s.versions_added == 0 and s.versions_retired == s.rejected - s.carried_forward
    retired_ids = sum(result.endpoints[e].versions_retired for e in ENDPOINTS)
    kept = sum(len(v) for v in before.values()) - retired_ids
    assert sum(len(raw.current(e)) for e in ENDPOINTS) == kept


def test_too_many_bad_records_fail_the_run(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "3", *SIZES, "--fault", "users:bad_records=0.05")
    with pytest.raises(IngestionFailed) as failed:
        ingest(url)  # the default limit: 1%
    message = str(failed.value)
    assert message.startswith("users: ") and "break the contract" in message
    assert "> the 1.0% allowed" in message
    assert not raw.exists("raw.users") and not raw.exists("raw.tracks")  # nothing loaded


def test_contract_edges_exactly_100_101_and_null_pages(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator(
        "--seed", "9", "--tracks", "100", "--users", "101",
        "--fault", "listen_history:null_totals=1.0",
    )  # fmt: skip
    result = ingest(url)

    assert_raw_matches_api(raw, url)
    tracks, users, histories = (result.endpoints[e] for e in ENDPOINTS)
    assert (tracks.pages, tracks.records, tracks.api_total) == (1, 100, 100)
    assert (users.pages, users.records, users.api_total) == (2, 101, 101)
    assert histories.api_total is None and histories.records == 101  # read to the short page


def test_a_read_that_does_not_add_up_is_read_again_then_fails(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "4", "--users", "50", "--tracks", "250",
                          "--fault", "tracks:unstable_order=1.0")  # fmt: skip
    with pytest.raises(IngestionFailed) as failed:
        ingest(url)
    message = str(failed.value)
    assert message.startswith("tracks: incomplete read after 2 reads: ")
    assert "served more than once" in message and "(first read: " in message
    stats = raw.rows("select * from monitoring.ingestion_stats")
    status = {s["endpoint"]: (s["status"], s["rereads"]) for s in stats}
    assert status.pop("tracks") == ("failed", 1)  # the others, read in full, are discarded
    assert set(status.values()) <= {("discarded", 1)}
    assert not raw.exists("raw.tracks")


# ---- an API the simulator cannot play: zero records, new fields ------------------------------


def test_zero_records_load_empty_tables(fake_api: FakeApi, ingest: Ingest, raw: Raw) -> None:
    result = ingest(fake_api({e: [] for e in ENDPOINTS}))
    for endpoint in ENDPOINTS:
        s = result.endpoints[endpoint]
        assert (s.pages, s.records, s.api_total, s.versions_added) == (1, 0, 0, 0)
        assert raw.exists(f"raw.{endpoint}") and not raw.current(endpoint)
    assert raw.exists("raw.listen_history__items") and raw.exists("raw._rejected")


def test_new_fields_are_kept_and_reported_as_drift(
    simulator_url: str, fake_api: FakeApi, ingest: Ingest, raw: Raw
) -> None:
    served = {e: fetch_all(simulator_url, e) for e in ENDPOINTS}
    ingest(fake_api(served))
    drifted = {
        **served,
        "tracks": [
            {**r, "bpm": i % 180, "Mood": {"calm": i % 2 == 0}}
            for i, r in enumerate(served["tracks"])
        ],
    }
    result = ingest(fake_api(drifted))

    assert result.endpoints["tracks"].new_fields == {"bpm": "bpm", "Mood": "mood"}
    assert raw.stats(result.run_id)["tracks"]["new_fields"] == {"bpm": "bpm", "Mood": "mood"}
    types = {
        r["column_name"]: r["data_type"]
        for r in raw.rows(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'raw' and table_name = 'tracks'"
        )
    }
    assert types["bpm"] == types["mood"] == "json"  # dlt's type for Parquet through ADBC
    assert types["id"] == "bigint" and types["created_at"] == "timestamp with time zone"
    current = raw.current("tracks")
    for i, record in enumerate(served["tracks"]):
        row = current[record["id"]]
        assert row["bpm"] == i % 180 and row["mood"] == {"calm": i % 2 == 0}
    # content changed: every track has a new version, the old ones are retired
    assert result.endpoints["tracks"].versions_added == len(served["tracks"])
    assert result.endpoints["users"].versions_added == 0

    # a new field's column that the earlier CSV loader made jsonb still loads
    with psycopg.connect(raw.url.url(), autocommit=True) as conn:
        conn.execute("alter table raw.tracks alter column bpm type jsonb using bpm::jsonb")
    changed = {**drifted, "tracks": [{**r, "bpm": -1} for r in drifted["tracks"]]}
    again = ingest(fake_api(changed))
    assert again.endpoints["tracks"].versions_retired == len(served["tracks"])
    assert {r["bpm"] for r in raw.current("tracks").values()} == {-1}


def test_a_renamed_or_retyped_field_is_quarantined_and_a_renamed_endpoint_loads_nothing(
    simulator_url: str, fake_api: FakeApi, ingest: Ingest, raw: Raw
) -> None:
    """Drift that breaks the contract, served over real HTTP (`fake_api`, a local server of the
    API's pages): a few tracks with `name` renamed to `title` or `created_at` retyped to epoch
    seconds are quarantined with their reasons and keep their current version, the rest loads;
    the same rename on every track fails the run and leaves raw as it was, every endpoint."""
    served = {e: fetch_all(simulator_url, e) for e in ENDPOINTS}
    ingest(fake_api(served))
    tracks = served["tracks"]
    renamed = [{**{k: v for k, v in r.items() if k != "name"}, "title": r["name"]} for r in tracks]
    retyped = [{**r, "created_at": 1_700_000_000} for r in tracks]
    drifted = {**served, "tracks": renamed[:3] + retyped[3:6] + tracks[6:]}

    result = ingest(fake_api(drifted), max_reject_share=0.2)

    s = result.endpoints["tracks"]
    assert (s.rejected, s.carried_forward, s.versions_added) == (6, 6, 0)
    rejected = {
        orjson.loads(r["payload"])["id"]: r["reason"]
        for r in raw.rows("select * from raw._rejected where run_id = %s", (result.run_id,))
    }
    assert sorted(rejected) == sorted(r["id"] for r in tracks[:6])
    assert [rejected[r["id"]] for r in tracks[:6]] == ["name: missing"] * 3 + [
        "created_at: not a timestamp but int"
    ] * 3
    current = raw.current("tracks")
    assert {i: current[r["id"]]["name"] for i, r in enumerate(tracks)} == {
        i: r["name"] for i, r in enumerate(tracks)
    }, "a rejected track keeps its current version; the others are unchanged"
    reasons = raw.stats(result.run_id)["tracks"]["rejected_by_reason"]
    assert reasons == {"name: missing": 3, "created_at: not a timestamp but int": 3}

    before = raw.snapshot()
    with pytest.raises(IngestionFailed) as failed:
        ingest(fake_api({**served, "tracks": renamed}))
    message = str(failed.value)
    assert message.startswith("tracks: ") and "break the contract" in message
    assert raw.snapshot() == before, "nothing half-loaded: no endpoint's records went in"

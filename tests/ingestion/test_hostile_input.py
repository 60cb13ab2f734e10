"""The API is untrusted: a hostile page (simulator fault `hostile`) loads its good records, and
the nasty-but-valid strings byte for byte; what Postgres cannot store (NUL, a lone surrogate)
or what is absurd (a 10 MB string) goes to raw._rejected with a reason that does not quote it.
An oversized response (fault `oversized`) fails the run with one clear line, raw unchanged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from ingestion.moovitamix_source.contract import ENDPOINTS, text_problem
from ingestion.pipeline import IngestionFailed
from simulator.hostile import NASTY, NUL
from tests.ingestion.ingestion_helpers import Ingest, Raw, admin, api_time, fetch_all

SIZES = ("--users", "300", "--tracks", "200")
FIELD_CAP = 64 * 1024


def strings(record: dict[str, Any]) -> list[str]:
    return [v for v in record.values() if isinstance(v, str)]


def unstorable(record: dict[str, Any]) -> bool:
    return any(text_problem(v, FIELD_CAP) for v in strings(record))


def test_a_hostile_page_loads_its_good_records_and_rejects_the_bad(
    start_simulator: Callable[..., str],
    ingest: Ingest,
    raw: Raw,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = start_simulator(
        "--seed", "5", *SIZES,
        "--fault", "tracks:hostile=1", "--fault", "users:hostile=2",
        "--fault", "listen_history:hostile=3",
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    result = ingest(url, max_reject_share=0.05)

    rejected = raw.rows("select * from raw._rejected")
    for endpoint, spec in ENDPOINTS.items():
        served = fetch_all(url, endpoint)
        bad = [r for r in served if unstorable(r)]
        assert len(bad) == 3, endpoint  # NUL, lone surrogate, 10 MB
        mine = {r["record_key"]: r for r in rejected if r["endpoint"] == endpoint}
        assert set(mine) == {str(r[spec.key]) for r in bad}
        assert result.endpoints[endpoint].rejected == 3
        for record in bad:
            row = mine[str(record[spec.key])]
            assert any(
                w in row["reason"] for w in ("NUL character", "lone surrogate", "field cap")
            ) or ("unparsable timestamp" in row["reason"])
            for value in strings(record):  # reasons name fields and sizes, not values
                if len(value) > 3 and not value.startswith("20"):
                    assert value not in row["reason"]
            assert len(row["payload"]) < 100_000  # the 10 MB string is not copied
        cut = [r for r in mine.values() if "<cut: " in r["payload"]]
        assert len(cut) == 1 and "10485760 bytes" in cut[0]["payload"]

        current = raw.current(endpoint)
        good = [r for r in served if not unstorable(r)]
        assert len(current) == len(good) == len(served) - 3
        nasty_seen = set()
        for record in good:
            row = current[record[spec.key]]
            for name, value in record.items():
                if name == "items":
                    assert row["item_count"] == len(value)
                elif name in ("created_at", "updated_at"):
                    assert row[name] == api_time(value)
                else:
                    assert row[name] == value, (endpoint, name)  # byte for byte
                    if value in NASTY:
                        nasty_seen.add(value)
        assert nasty_seen == set(NASTY), endpoint

    # Nothing was executed: the tables are all there, and hold what they should.
    assert raw.value("select count(*) from raw.users where _dlt_valid_to is null") == 297
    # The logs do not print the contents of records (names, emails).
    for record in fetch_all(url, "users"):  # the rejected ones included
        assert len(record["email"]) < 4 or record["email"] not in caplog.text
    assert NUL not in caplog.text and NASTY[0] not in caplog.text


def test_an_oversized_response_fails_the_run_and_raw_is_unchanged(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "6", *SIZES)
    ingest(url)
    before = raw.snapshot()

    admin(url, faults=["users:oversized=2,oversized_mb=3"])
    with pytest.raises(IngestionFailed) as failed:
        ingest(url, max_response_bytes=2 * 2**20)

    assert str(failed.value) == (
        "users page 2: response larger than the 2 MB cap (more than 2097152 bytes read; "
        "INGESTION_MAX_RESPONSE_MB sets the cap) (not retried)"
    )
    assert raw.snapshot() == before
    failed_stats = [
        r for r in raw.rows("select * from monitoring.ingestion_stats") if r["status"] == "failed"
    ]
    assert [r["endpoint"] for r in failed_stats] == ["users"]


def test_the_default_cap_is_50_mb_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingestion.config import IngestionConfig

    assert IngestionConfig().max_response_bytes == 50 * 2**20
    assert IngestionConfig().max_field_bytes == 64 * 2**10
    monkeypatch.setenv("INGESTION_MAX_RESPONSE_MB", "5")
    monkeypatch.setenv("INGESTION_MAX_FIELD_KB", "1")
    assert IngestionConfig().max_response_bytes == 5 * 2**20
    assert IngestionConfig().max_field_bytes == 1024

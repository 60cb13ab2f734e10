"""Contract checks and Arrow batches: which records pass, why the others are rejected, and
what the rows look like (values as served, items in order, new fields kept)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import orjson
import pytest

from ingestion.moovitamix_source.completeness import ReadCheck, ReadMismatch
from ingestion.moovitamix_source.contract import LISTEN_HISTORY, TRACKS, USERS, record_schema
from ingestion.moovitamix_source.records import (
    KnownHashes,
    RecordBuilder,
    check_record,
    record_hash,
    record_hashes,
)


def track(i: int, **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": i,
        "name": f"song{i}",
        "artist": "Ann Lee",
        "songwriters": "Ann Lee, Bo Ek",
        "duration": "03:07",
        "genres": "Rock, Pop",
        "album": "album",
        "created_at": "2025-03-11T04:05:17.576142",
        "updated_at": "2025-03-12T00:00:00",
    }
    record.update(changes)
    return record


def history(user_id: int, items: list[int], **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "user_id": user_id,
        "items": items,
        "created_at": "2025-01-01T00:00:00.000001",
        "updated_at": "2025-02-01T00:00:00.5",
    }
    record.update(changes)
    return record


def builder(endpoint=TRACKS, **kwargs: object) -> RecordBuilder:
    return RecordBuilder(endpoint, run_id="run-1", **kwargs)  # type: ignore[arg-type]


# ---- the contract --------------------------------------------------------------------------


def without(record: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    ("endpoint", "record", "reason"),
    [
        (TRACKS, without(track(1), "id"), "id: missing"),
        (TRACKS, track(1, id="abc"), 'id: not an integer but string "abc"'),
        (TRACKS, track(1, id=1.5), "id: not an integer but number 1.5"),
        (TRACKS, track(1, id=True), "id: not an integer but boolean true"),
        (TRACKS, track(1, id=2**64), "id: not an integer"),
        (TRACKS, track(1, name=None), "name: null (expected string)"),
        (TRACKS, track(1, duration=252), "duration: not a string but integer"),
        (TRACKS, track(1, created_at="not-a-timestamp"), "created_at: unparsable timestamp"),
        (TRACKS, track(1, updated_at="2026-02-30T25:61:00.000000"), "unparsable timestamp"),
        (TRACKS, track(1, updated_at=""), 'updated_at: unparsable timestamp ""'),
        (USERS, {"id": 3}, "first_name: missing"),
        (LISTEN_HISTORY, {**history(1, [1, 2]), "user_id": "abc"}, "user_id: not an integer"),
        (LISTEN_HISTORY, without(history(1, [1]), "user_id"), "user_id: missing"),
        (
            LISTEN_HISTORY,
            {**history(1, []), "items": None},
            "items: null (expected list of integers)",
        ),
        (LISTEN_HISTORY, history(1, [1, 2, "abc"]), 'items[2] = "abc"'),
        (LISTEN_HISTORY, history(1, [1, 2.5]), "items: an element is not an integer"),
        (LISTEN_HISTORY, "not a record", "record: not an object but string"),
    ],
)
def test_contract_breaks_are_named(endpoint, record, reason: str) -> None:
    _, problems = check_record(endpoint, record)
    assert problems
    assert reason in "; ".join(f"{what} {detail}".strip() for what, detail in problems)


def test_a_record_with_every_problem_lists_them_all() -> None:
    _, problems = check_record(TRACKS, track(1, id="x", name=None, created_at="?"))
    assert [what for what, _ in problems] == [
        "id: not an integer",
        "name: null",
        "created_at: unparsable timestamp",
    ]


def test_good_records_pass() -> None:
    assert check_record(TRACKS, track(1))[1] == []
    assert check_record(LISTEN_HISTORY, history(1, []))[1] == []
    assert check_record(LISTEN_HISTORY, history(1, [5, 5, 2**62]))[1] == []


# ---- rows ------------------------------------------------------------------------------------


def test_rows_keep_the_values_as_served() -> None:
    b = builder()
    keys = b.add_page(1, [track(7), track(8, updated_at="2025-03-12T00:00:00+02:00")])
    batch = b.flush()
    assert keys == [7, 8]
    assert batch.records is not None and batch.rejected is None
    rows = batch.records.to_pylist()
    assert rows[0]["id"] == 7 and rows[0]["songwriters"] == "Ann Lee, Bo Ek"
    assert rows[0]["duration"] == "03:07"
    assert rows[0]["created_at"] == datetime(2025, 3, 11, 4, 5, 17, 576142, tzinfo=UTC)
    assert rows[1]["updated_at"] == datetime(2025, 3, 11, 22, 0, tzinfo=UTC)  # offset -> UTC
    assert rows[0]["record_hash"] == record_hash(track(7))
    assert batch.records.schema.remove_metadata().equals(record_schema(TRACKS))
    assert len({r["_dlt_id"] for r in rows}) == 2


def test_bad_records_are_rejected_and_the_good_ones_kept() -> None:
    b = builder()
    page = [track(1), track(2, id="abc"), without(track(3), "id"), track(4, name=None), track(5)]
    keys = b.add_page(3, page)
    batch = b.flush()
    assert keys == [1, None, None, 4, 5]
    assert batch.records is not None and batch.records.column("id").to_pylist() == [1, 5]
    assert batch.rejected is not None
    rejected = batch.rejected.to_pylist()
    assert [r["record_key"] for r in rejected] == [None, None, "4"]
    assert all(r["endpoint"] == "tracks" and r["page"] == 3 for r in rejected)
    assert all(r["run_id"] == "run-1" and r["rejected_at"] for r in rejected)
    assert orjson.loads(rejected[0]["payload"]) == page[1]  # the record as served
    assert list(orjson.loads(rejected[1]["payload"])) == list(page[2])  # key order too
    assert b.rejected == 3 and b.records == 5
    assert b.rejected_keys == [4]
    assert b.rejected_by_reason == {"id: not an integer": 1, "id: missing": 1, "name: null": 1}


def test_the_fast_path_and_the_record_by_record_path_agree() -> None:
    page = [track(i) for i in range(1, 60)]
    fast = builder()
    fast.add_page(1, copy.deepcopy(page))
    slow = builder()
    slow.add_page(1, [*copy.deepcopy(page), track(99, id="bad")])  # one bad record: slow path
    a, b = fast.flush().records, slow.flush().records
    assert a is not None and b is not None
    assert a.drop(["_dlt_id"]).equals(b.drop(["_dlt_id"]))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**without(track(7), "name"), "nam": "x"}, "name: missing"),  # as many keys, one other
        ({**without(track(7), "album"), "bpm": 120}, "album: missing"),  # new field, one missing
        (track(7, created_at="2025-03-11T04:05:17\n2025-03-11T04:05:17"), "unparsable timestamp"),
        (track(7, created_at="2025-03-11T04:05:17\n"), "unparsable timestamp"),
        (track(7, updated_at="2025-02-29T00:00:00"), "unparsable timestamp"),  # not a leap year
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], "record: not an object"),  # as many elements as fields
    ],
)
def test_a_page_with_one_bad_record_rejects_it_alone(bad: object, reason: str) -> None:
    b = builder()
    keys = b.add_page(1, [track(1), bad, track(2)])
    assert b.rejected == 1 and reason in next(iter(b.rejected_by_reason))
    batch = b.flush()
    assert batch.records is not None and batch.records.column("id").to_pylist() == [1, 2]
    assert keys[0] == 1 and keys[2] == 2


def test_record_hashes_of_a_page_equal_each_record_hash() -> None:
    page = [track(1), dict(reversed(list(track(2).items()))), track(3, bpm=2**70)]
    assert record_hashes(page) == [record_hash(r) for r in page]  # 2**70: orjson refuses it
    assert record_hashes(page[:2]) == [record_hash(r) for r in page[:2]]


def test_items_keep_their_order_and_repeats() -> None:
    b = builder(LISTEN_HISTORY)
    b.add_page(1, [history(10, [5, 3, 5]), history(11, []), history(12, [9])])
    batch = b.flush()
    assert batch.records is not None and batch.items is not None
    assert batch.records.column("item_count").to_pylist() == [3, 0, 1]
    hashes = dict(
        zip(
            batch.records["user_id"].to_pylist(),
            batch.records["record_hash"].to_pylist(),
            strict=True,
        )
    )
    assert batch.items.to_pylist() == [
        {"record_hash": hashes[10], "user_id": 10, "position": 0, "track_id": 5},
        {"record_hash": hashes[10], "user_id": 10, "position": 1, "track_id": 3},
        {"record_hash": hashes[10], "user_id": 10, "position": 2, "track_id": 5},
        {"record_hash": hashes[12], "user_id": 12, "position": 0, "track_id": 9},
    ]


def test_items_of_versions_raw_holds_are_not_sent_again() -> None:
    known = KnownHashes([record_hash(history(10, [5, 3]))])
    b = builder(LISTEN_HISTORY, known_hashes=known)
    b.add_page(1, [history(10, [5, 3]), history(11, [4])])
    batch = b.flush()
    assert batch.records is not None and batch.records.num_rows == 2
    assert batch.items is not None and batch.items.column("user_id").to_pylist() == [11]
    assert b.items_sent == 1


def test_batches_are_bounded() -> None:
    b = builder(LISTEN_HISTORY, batch_rows=50, batch_items=120)
    b.add_page(1, [history(i, [1, 2, 3]) for i in range(45)])
    assert b.full  # 135 items
    b.flush()
    assert not b.full


def test_new_fields_are_kept_as_json_and_reported() -> None:
    b = builder()
    b.add_page(1, [track(1), track(2, mood="happy"), track(3, **{"Play Count": 7})])
    b.add_page(2, [track(4, mood={"a": [1]}), track(5, record_hash="theirs")])
    batch = b.flush()
    assert batch.records is not None
    assert sorted(batch.drift_columns) == ["api_record_hash", "mood", "play_count"]
    rows = {r["id"]: r for r in batch.records.to_pylist()}
    assert rows[1]["mood"] is None
    assert rows[2]["mood"] == '"happy"' and rows[4]["mood"] == '{"a":[1]}'
    assert rows[3]["play_count"] == "7"
    assert rows[5]["api_record_hash"] == '"theirs"' and rows[5]["record_hash"] != "theirs"
    assert {d.field: (d.column, d.first_page, d.records) for d in b.drift.values()} == {
        "mood": ("mood", 1, 2),
        "Play Count": ("play_count", 1, 1),
        "record_hash": ("api_record_hash", 2, 1),
    }


def test_record_hash_is_content_not_key_order() -> None:
    a = track(1)
    b = dict(reversed(list(a.items())))
    assert record_hash(a) == record_hash(b)
    assert record_hash(a) != record_hash(track(1, name="other"))


def test_known_hashes() -> None:
    known = KnownHashes(["a" * 32, "b" * 32])
    assert "a" * 32 in known and "c" * 32 not in known
    assert KnownHashes().contains_many(["a" * 32]).tolist() == [False]
    chunked = KnownHashes.from_chunks([["b" * 32], [], ["a" * 32, "b" * 32]])
    assert len(chunked) == 2
    assert chunked.contains_many(["a" * 32, "z" * 32, "b" * 32]).tolist() == [True, False, True]


# ---- completeness ----------------------------------------------------------------------------


def test_a_complete_read_passes() -> None:
    check = ReadCheck("users")
    check.add_page(1, 250, list(range(100)))
    check.add_page(3, 250, list(range(200, 250)))
    check.add_page(2, 250, [*range(100, 199), None])  # a record without a readable id
    check.verify()
    assert check.received == 250 and check.unkeyed == 1


def test_a_record_moved_between_pages_is_reported() -> None:
    check = ReadCheck("tracks")
    check.add_page(1, 200, list(range(100)))
    check.add_page(2, 200, [*range(101, 200), 50])  # 100 missed, 50 twice
    with pytest.raises(ReadMismatch) as mismatch:
        check.verify()
    assert str(mismatch.value) == ("tracks: 1 id served more than once (e.g. id 50 on pages 1, 2)")


def test_missing_records_and_a_changing_total_are_reported() -> None:
    check = ReadCheck("listen_history")
    check.add_page(1, 200, list(range(100)))
    check.add_page(2, 201, list(range(100, 150)))
    problems = check.problems()
    assert problems == [
        "the total changed during the read: page 1 said 200, page 2 said 201",
        "received 150 records but the API's total is 200",
    ]


def test_null_totals_leave_only_the_id_check() -> None:
    check = ReadCheck("users")
    check.add_page(1, None, [1, 2])
    check.add_page(2, None, [3])
    check.verify()
    assert check.total is None

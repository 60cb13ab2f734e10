"""Contract checks and Arrow batches: which records pass, why the others are rejected, and
what the rows look like (values as served, items in order, new fields kept)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pytest

from ingestion.moovitamix_source import ReadCheck
from ingestion.moovitamix_source.contract import (
    LISTEN_HISTORY,
    TRACKS,
    USERS,
    Checker,
    Tables,
    known,
    record_hash,
    record_schema,
)
from ingestion.moovitamix_source.http import parse_page


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


def check(endpoint, *pages: list, careful: bool = False) -> tuple[Checker, Tables, list]:
    """Check pages 1, 2, ... with a fresh checker: it, the tables, the keys of each page."""
    checker, out = Checker(endpoint, "run-1", 64 * 1024), Tables()
    keys = [checker.page(n, page, careful, out) for n, page in enumerate(pages, 1)]
    return checker, out, keys


def reasons(endpoint, record: object) -> str:
    return Tables.rejected_table(check(endpoint, [record])[1]).column("reason")[0].as_py()


# ---- the contract --------------------------------------------------------------------------


def without(record: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    ("endpoint", "record", "reason"),
    [
        (TRACKS, without(track(1), "id"), "id: missing"),
        (TRACKS, track(1, id="abc"), "id: not an integer"),
        (TRACKS, track(1, id=1.5), "id: not an integer"),
        (TRACKS, track(1, id=True), "id: not an integer"),
        (TRACKS, track(1, id=2**64), "id: out of the 64-bit range"),
        (TRACKS, track(1, name=None), "name: null"),
        (TRACKS, track(1, duration=252), "duration: not a string"),
        (TRACKS, track(1, created_at="not-a-timestamp"), "created_at: unparsable timestamp"),
        (TRACKS, track(1, updated_at="2026-02-30T25:61:00.000000"), "unparsable timestamp"),
        (TRACKS, track(1, updated_at=""), "updated_at: unparsable timestamp"),
        (TRACKS, track(1, updated_at="1700000000"), "updated_at: unparsable timestamp"),
        (TRACKS, track(1, updated_at=1700000000), "updated_at: not a timestamp but int"),
        (USERS, {"id": 3}, "first_name: missing"),
        (LISTEN_HISTORY, {**history(1, [1, 2]), "user_id": "abc"}, "user_id: not an integer"),
        (LISTEN_HISTORY, without(history(1, [1]), "user_id"), "user_id: missing"),
        (LISTEN_HISTORY, {**history(1, []), "items": None}, "items: null"),
        (LISTEN_HISTORY, history(1, [1, 2, "abc"]), "items[2]: not an integer"),
        (LISTEN_HISTORY, history(1, [1, 2.5]), "items[1]: not an integer"),
        (LISTEN_HISTORY, "not a record", "record: not an object"),
    ],
)
def test_contract_breaks_are_named(endpoint, record, reason: str) -> None:
    assert reason in reasons(endpoint, record)


def test_a_record_with_every_problem_lists_them_all() -> None:
    assert reasons(TRACKS, track(1, id="x", name=None, created_at="?")) == (
        "id: not an integer; name: null; created_at: unparsable timestamp"
    )


def test_good_records_pass() -> None:
    for endpoint, record in [
        (TRACKS, track(1)), (LISTEN_HISTORY, history(1, [])),
        (LISTEN_HISTORY, history(1, [5, 5, 2**62])),
    ]:  # fmt: skip
        checker, out, _ = check(endpoint, [record])
        assert checker.rejected == 0 and out.records[0].num_rows == 1


# ---- rows ------------------------------------------------------------------------------------


def test_rows_keep_the_values_as_served() -> None:
    page = [track(7), track(8, updated_at="2025-03-12T00:00:00+02:00")]
    _, out, keys = check(TRACKS, page)
    assert keys == [[7, 8]] and not out.rejected
    (table,) = out.records
    rows = table.to_pylist()
    assert rows[0]["id"] == 7 and rows[0]["songwriters"] == "Ann Lee, Bo Ek"
    assert rows[0]["duration"] == "03:07"
    assert rows[0]["created_at"] == datetime(2025, 3, 11, 4, 5, 17, 576142, tzinfo=UTC)
    assert rows[1]["updated_at"] == datetime(2025, 3, 11, 22, 0, tzinfo=UTC)  # offset -> UTC
    assert rows[0]["record_hash"] == record_hash(track(7))
    assert table.schema.equals(record_schema(TRACKS, with_dlt_id=False))


def test_bad_records_are_rejected_and_the_good_ones_kept() -> None:
    page = [track(1), track(2, id="abc"), without(track(3), "id"), track(4, name=None), track(5)]
    checker, out, keys = check(TRACKS, [track(0)], page)
    assert keys[1] == [1, None, None, 4, 5]
    assert [t.column("id").to_pylist() for t in out.records] == [[0], [1, 5]]
    rejected = out.rejected_table().to_pylist()
    assert [r["record_key"] for r in rejected] == [None, None, "4"]
    assert all(r["endpoint"] == "tracks" and r["page"] == 2 for r in rejected)
    assert all(r["run_id"] == "run-1" and r["rejected_at"] for r in rejected)
    assert orjson.loads(rejected[0]["payload"]) == page[1]  # the record as served
    assert list(orjson.loads(rejected[1]["payload"])) == list(page[2])  # key order too
    assert checker.rejected == 3 and checker.rejected_keys == [4]
    assert checker.rejected_by_reason == {
        "id: not an integer": 1, "id: missing": 1, "name: null": 1
    }  # fmt: skip


def test_the_page_check_and_the_record_by_record_check_agree() -> None:
    page = [track(i) for i in range(1, 60)]
    fast = check(TRACKS, copy.deepcopy(page))[1].records[0]
    slow = check(TRACKS, [*copy.deepcopy(page), track(99, id="bad")])[1].records[0]
    careful = check(TRACKS, copy.deepcopy(page), careful=True)[1].records[0]
    assert fast.equals(slow) and fast.equals(careful)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**without(track(7), "name"), "nam": "x"}, "name: missing"),  # as many keys, one other
        ({**without(track(7), "album"), "bpm": 120}, "album: missing"),  # new field, one missing
        (track(7, created_at="2025-03-11T04:05:17\n2025-03-11T04:05:17"), "unparsable timestamp"),
        (track(7, created_at="2025-03-11T04:05:17\n"), "unparsable timestamp"),
        (track(7, updated_at="2025-02-29T00:00:00"), "unparsable timestamp"),  # not a leap year
        (track(7, updated_at="0000-01-01T00:00:00"), "unparsable timestamp"),  # no year 0
        (track(7, updated_at="\u0662\u0660\u0662\u0665-03-11T04:05:17"), "unparsable timestamp"),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], "record: not an object"),  # as many elements as fields
        (track(7, name="a\x00b"), "name: holds a NUL character"),
        (track(7, name="x" * (65 * 1024)), "name: over the 65536-byte field cap"),
        (track(7, mood="x" * (65 * 1024)), "over the 65536-byte field cap"),  # a new field
        (track(7, **{"x" * 300: 1}), "a new field's name: too long"),
    ],
)
@pytest.mark.parametrize("served", [True, False], ids=["as-served", "careful"])
def test_a_page_with_one_bad_record_rejects_it_alone(
    bad: object, reason: str, served: bool
) -> None:
    records, careful = [track(1), bad, track(2)], True
    if served:  # as the API serves it: the body decides whether to go record by record
        page = parse_page(1, orjson.dumps({"items": records}), 64 * 1024)
        records, careful = page.items, page.careful
    checker, out, keys = check(TRACKS, records, careful=careful)
    assert checker.rejected == 1 and reason in next(iter(checker.rejected_by_reason))
    assert out.records[0].column("id").to_pylist() == [1, 2]
    assert keys[0][0] == 1 and keys[0][2] == 2


def test_record_hash_is_content_not_key_order() -> None:
    a = track(1)
    assert record_hash(a) == record_hash(dict(reversed(list(a.items()))))
    assert record_hash(a) != record_hash(track(1, name="other"))
    assert record_hash(track(3, bpm=2**70))  # a value orjson refuses: the stdlib hashes it


def test_items_keep_their_order_and_repeats() -> None:
    _, out, _ = check(LISTEN_HISTORY, [history(10, [5, 3, 5]), history(11, []), history(12, [9])])
    (records,), (items,) = out.records, out.items
    assert records.column("item_count").to_pylist() == [3, 0, 1]
    hashes = dict(zip(records["user_id"].to_pylist(), records["record_hash"].to_pylist(),
                      strict=True))  # fmt: skip
    assert items.to_pylist() == [
        {"record_hash": hashes[10], "user_id": 10, "position": 0, "track_id": 5},
        {"record_hash": hashes[10], "user_id": 10, "position": 1, "track_id": 3},
        {"record_hash": hashes[10], "user_id": 10, "position": 2, "track_id": 5},
        {"record_hash": hashes[12], "user_id": 12, "position": 0, "track_id": 9},
    ]


def test_items_only_of_versions_raw_does_not_hold() -> None:
    page = [history(10, [5, 3]), history(11, [7]), history(12, [9, 9])]
    known_ = np.array([record_hash(page[0]), record_hash(page[2])], dtype="S32")
    checker, out = Checker(LISTEN_HISTORY, "run-1", 64 * 1024, np.sort(known_)), Tables()
    checker.page(1, page, False, out)
    (records,), (items,) = out.records, out.items
    assert records.column("item_count").to_pylist() == [2, 1, 2]  # every version's count
    assert items.to_pylist() == [
        {"record_hash": record_hash(page[1]), "user_id": 11, "position": 0, "track_id": 7}
    ]


def test_known_hashes() -> None:
    hashes = np.unique(np.array(["b" * 32, "a" * 32], dtype="S32"))
    column = pa.chunked_array([["a" * 32, "z" * 32, "b" * 32]])
    assert known(hashes, column).tolist() == [True, False, True]


def test_new_fields_are_kept_as_json_and_reported() -> None:
    checker, out, _ = check(
        TRACKS,
        [track(1), track(2, mood="happy"), track(3, **{"Play Count": 7})],
        [track(4, mood={"a": [1]}), track(5, record_hash="theirs")],
    )
    assert checker.drift == {"mood": "mood", "Play Count": "play_count",
                             "record_hash": "api_record_hash"}  # fmt: skip
    rows = {r["id"]: r for t in out.records for r in t.to_pylist()}
    assert rows[1]["mood"] is None
    assert rows[2]["mood"] == '"happy"' and rows[4]["mood"] == '{"a":[1]}'
    assert rows[3]["play_count"] == "7"
    assert rows[5]["api_record_hash"] == '"theirs"' and rows[5]["record_hash"] != "theirs"


@pytest.mark.parametrize("endpoint", [TRACKS, LISTEN_HISTORY])
def test_pages_checked_as_one_batch_give_the_rows_page_by_page_gives(endpoint) -> None:
    """A task's pages become one table (Tables(batch=True) + flush): the same rows, items and
    rejects as a table per page, with pages checked record by record (careful) among them."""
    if endpoint is TRACKS:
        pages = [[track(1), track(2, mood="happy")], [track(3, id="x"), track(4)],
                 [track(5, created_at="2025-03-11T04:05:17+02:00"), track(6, **{"A b": 1})],
                 [track(7, name="\x00")], [track(8)]]  # fmt: skip
    else:
        pages = [[history(1, [5, 3]), history(2, [])], [history(3, [1, "a"]), history(6, [2])],
                 [history(4, [7, 7], updated_at="2025-02-01T00:00:00Z")],
                 [history(5, [1])]]  # fmt: skip
    careful = {3} if endpoint is TRACKS else {2}  # 1-based page numbers checked as the API's
    known_ = np.array([record_hash(history(5, [1]))], dtype="S32")

    def run(batch: bool) -> tuple[Checker, Tables, list]:
        checker = Checker(
            endpoint, "run-1", 64 * 1024, known_ if endpoint is LISTEN_HISTORY else None
        )
        out = Tables(batch=batch)
        keys = [checker.page(n, p, n in careful, out) for n, p in enumerate(pages, 1)]
        checker.flush(out)
        return checker, out, keys

    (by_page, pages_out, page_keys), (batched, batch_out, batch_keys) = run(False), run(True)
    assert len(pages_out.records) > 1 and len(batch_out.records) == 1
    assert batch_keys == page_keys and batched.rejected == by_page.rejected > 0
    assert batched.drift == by_page.drift
    one = pa.concat_tables(pages_out.records, promote_options="default")
    assert batch_out.records[0].equals(one.select(batch_out.records[0].column_names))
    assert set(one.column_names) == set(batch_out.records[0].column_names)
    if endpoint is LISTEN_HISTORY:
        assert pa.concat_tables(batch_out.items).equals(pa.concat_tables(pages_out.items))
        assert pa.concat_tables(batch_out.items).num_rows == 5  # not user 5's: raw holds it
    rejects = [{**r, "rejected_at": None} for r in pages_out.rejected]
    assert [{**r, "rejected_at": None} for r in batch_out.rejected] == rejects


# ---- completeness ----------------------------------------------------------------------------


def test_a_complete_read_passes() -> None:
    read = ReadCheck()
    read.add(1, 250, list(range(100)))
    read.add(3, 250, list(range(200, 250)))
    read.add(2, 250, [*range(100, 199), None])  # a record without a readable id
    assert read.problems() == [] and read.received == 250


def test_a_record_moved_between_pages_is_reported() -> None:
    read = ReadCheck()
    read.add(1, 200, list(range(100)))
    read.add(2, 200, [*range(101, 200), 50])  # 100 missed, 50 twice
    assert read.problems() == ["1 id served more than once (e.g. id 50 on pages 1, 2)"]


def test_missing_records_and_a_changing_total_are_reported() -> None:
    read = ReadCheck()
    read.add(1, 200, list(range(100)))
    read.add(2, 201, list(range(100, 150)))
    assert read.problems() == [
        "the total changed during the read: page 1 said 200, page 2 said 201",
        "received 150 records but the API's total is 200",
    ]


def test_null_totals_leave_only_the_id_check() -> None:
    read = ReadCheck()
    read.add(1, None, [1, 2])
    read.add(2, None, [3])
    assert read.problems() == [] and read.total is None
